"""The ``countersign`` command: serve, db, policy, ledger and clients."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from countersign import __version__
from countersign.core.errors import CountersignError, PolicyInvalid
from countersign.policy import (
    Policy,
    Subject,
    check_policy_file,
    explain,
    load_policy,
    render_explanation,
    render_problems,
)
from countersign.settings import ConfigError, Settings, load_settings

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _kv(text: str) -> tuple[str, Any]:
    """``k=v`` with ``v`` read as JSON when it is JSON (``rows=5`` is the number 5)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="countersign", description="Action-level approvals decided in Slack and Teams."
    )
    parser.add_argument("--version", action="version", version=f"countersign {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--policy", type=Path, help="policy file (default: COUNTERSIGN_POLICY)")

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="SUBCOMMAND"
    )
    db.add_parser("upgrade", help="apply migrations")

    policy = commands.add_parser("policy", help="check or explain a policy").add_subparsers(
        dest="policy_command", required=True, metavar="SUBCOMMAND"
    )
    check = policy.add_parser("check", help="validate a policy file, every problem with its line")
    check.add_argument("file", nargs="?", type=Path)
    expl = policy.add_parser("explain", help="which rule matches a request, and why")
    expl.add_argument("--policy", type=Path)
    expl.add_argument("--action", required=True)
    expl.add_argument("--resource", required=True)
    expl.add_argument("--reason", default="")
    expl.add_argument("--requested-by")
    expl.add_argument("--client", default="")
    expl.add_argument("--param", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    expl.add_argument("--context", type=_kv, action="append", default=[], metavar="KEY=VALUE")

    ledger = commands.add_parser("ledger", help="verify or export the ledger").add_subparsers(
        dest="ledger_command", required=True, metavar="SUBCOMMAND"
    )
    verify = ledger.add_parser("verify", help="check the hash chain; exit 1 at the first bad entry")
    verify.add_argument("--expect-head", metavar="HASH", help="fail unless the head is this hash")
    export = ledger.add_parser("export", help="write the ledger as evidence")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")

    req = commands.add_parser(
        "request",
        help="ask for approval (pipelines): exit 0 approved, 1 denied, 2 expired/cancelled/"
        "timed out, 3 error",
    )
    req.add_argument("--action", required=True)
    req.add_argument("--resource", required=True)
    req.add_argument("--reason", required=True)
    req.add_argument("--param", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    req.add_argument("--context", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    req.add_argument("--requested-by", metavar="EMAIL")
    req.add_argument("--callback-url")
    req.add_argument("--ttl", type=int, metavar="SECONDS")
    req.add_argument("--idempotency-key", help="reuse to make a retried step idempotent")
    req.add_argument("--wait", action="store_true", help="wait for the decision")
    req.add_argument("--timeout", type=float, default=1800, metavar="S")
    req.add_argument("--cancel-on-timeout", action="store_true")
    req.add_argument("--json", action="store_true", help="print the request as JSON")

    gate = commands.add_parser(
        "mcp-gate",
        help="an MCP server (stdio) in front of another: each tool call waits for approval",
    )
    gate.add_argument(
        "--upstream", required=True, help='the upstream MCP server\'s command, e.g. "uvx mcp-x"'
    )
    gate.add_argument("--policy-action-prefix", default="mcp.", metavar="PREFIX")
    gate.add_argument("--resource", help="the requests' resource (default: mcp:<server name>)")
    gate.add_argument("--requested-by", metavar="EMAIL")
    gate.add_argument("--timeout", type=float, default=600, metavar="S")
    gate.add_argument("--issuer", help="pin the receipts' issuer (COUNTERSIGN_PUBLIC_URL)")

    hist = commands.add_parser("history", help="requests, newest first (over the API)")
    for name in ("status", "action", "resource", "requested-by", "approver", "since", "until"):
        hist.add_argument(f"--{name}")
    hist.add_argument("--limit", type=int, default=50)
    hist.add_argument("--format", choices=["table", "json", "csv"], default="table")

    keys = commands.add_parser("keys", help="receipt signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="SUBCOMMAND"
    )
    keys.add_parser("rotate", help="start a new signing key; the old one stays published")

    clients = commands.add_parser("clients", help="API clients").add_subparsers(
        dest="clients_command", required=True, metavar="SUBCOMMAND"
    )
    add = clients.add_parser("add", help="create a client; prints its token once")
    add.add_argument("name")
    add.add_argument("--owner", help="e-mail of the human responsible for the client")
    clients.add_parser("list", help="list clients")
    revoke = clients.add_parser("revoke", help="revoke a client's token at once")
    revoke.add_argument("name")

    slack = commands.add_parser("slack", help="Slack app setup").add_subparsers(
        dest="slack_command", required=True, metavar="SUBCOMMAND"
    )
    slack.add_parser(
        "manifest", help="print the Slack app manifest for COUNTERSIGN_PUBLIC_URL (JSON)"
    )

    teams = commands.add_parser("teams", help="Teams app setup").add_subparsers(
        dest="teams_command", required=True, metavar="SUBCOMMAND"
    )
    pkg = teams.add_parser("package", help="write the Teams app package (manifest + icons)")
    pkg.add_argument("--out", default="countersign.zip", help="zip file to write")
    teams.add_parser("conversations", help="list the Teams conversations the bot can post to")
    return parser


def _teams(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``teams package`` writes the app zip; ``teams conversations`` lists where cards can go."""
    if args.teams_command == "package":
        from bot.teams.package import package

        if not settings.microsoft_app_id:
            print(
                "countersign: MICROSOFT_APP_ID: the package names the bot's app id", file=sys.stderr
            )
            return EXIT_USAGE
        Path(args.out).write_bytes(package(settings.microsoft_app_id, settings.public_url))
        print(f"wrote {args.out}: upload it in Teams (Apps → Manage your apps)", file=out)
        return EXIT_OK

    async def run() -> int:
        from storage import SqlStore, create_engine
        from storage import chat as chat_store
        from storage.migrate import upgrade

        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
            async with SqlStore(engine).read() as tx:
                found = await chat_store.teams_conversations(tx.conn)
        finally:
            await engine.dispose()
        print(f"{'kind':9} {'where':40} {'conversation id'}", file=out)
        for c in found:
            where = (
                f"{c.team_name or '?'}/{c.channel_name or '?'}"
                if c.kind == "channel"
                else (c.user_email or c.user_id or "?")
            )
            print(f"{c.kind:9} {where[:40]:40} {c.id}", file=out)
        return EXIT_OK

    return asyncio.run(run())


def _slack(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``slack manifest``: the app manifest, ready to paste into Slack's app settings."""
    from bot.slack.manifest import manifest

    print(json.dumps(manifest(settings.public_url), indent=2), file=out)
    return EXIT_OK


async def _with_service(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``work(service)`` on a migrated database, then close it."""
    from countersign.crypto import SecretBox
    from countersign.service import ApprovalService
    from storage import SqlStore, create_engine
    from storage.migrate import upgrade

    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        policy = load_policy(settings.policy_path())
        sealer = SecretBox(settings.server_key())
        return await work(ApprovalService(SqlStore(engine), policy, sealer=sealer))
    finally:
        await engine.dispose()


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from countersign.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = args.policy or settings.policy_path()
    policy = load_policy(path)
    logging.getLogger("countersign").info(
        "policy %s: %d rules; database %s",
        path,
        len(policy.rules),
        settings.database_url.split("://")[0],
    )
    web.run_app(create_app(settings, policy), host=args.host, port=args.port, print=None)
    return EXIT_OK


def _db(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from storage import create_engine
    from storage.migrate import current_revision, upgrade

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
            print(f"database is at revision {await current_revision(engine)}", file=out)
        finally:
            await engine.dispose()
        return EXIT_OK

    return asyncio.run(run())


def _policy(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    if args.policy_command == "check":
        path = args.file or settings.policy_path()
        problems = check_policy_file(path)
        if problems:
            print(render_problems(problems), file=out)
            print(f"{path}: {len(problems)} problem(s)", file=out)
            return EXIT_FAILED
        checked = load_policy(path)
        print(f"{path}: OK ({len(checked.rules)} rules, {len(checked.groups)} groups)", file=out)
        return EXIT_OK
    policy: Policy = load_policy(args.policy or settings.policy_path())
    subject = Subject(
        action=args.action,
        resource=args.resource,
        reason=args.reason,
        params=dict(args.param),
        context=dict(args.context),
        requested_by=args.requested_by,
        client=args.client,
    )
    print(render_explanation(explain(policy, subject)), file=out)
    return EXIT_OK


def _ledger(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from storage import create_engine
    from storage import ledger as chain
    from storage.migrate import upgrade

    async def verify() -> int:
        report = await chain.verify_engine(engine)
        if not report.ok:
            print(f"ledger BROKEN at entry {report.bad_seq}: {report.problem}", file=out)
            return EXIT_FAILED
        if args.expect_head and args.expect_head != report.head_hash:
            print(f"ledger BROKEN: head is {report.head_hash}, not {args.expect_head}", file=out)
            return EXIT_FAILED
        head = f"head {report.head_seq} {report.head_hash}"
        print(f"ledger OK: {report.checked} entries, {head}", file=out)
        return EXIT_OK

    async def export() -> int:
        target = args.out.open("w", encoding="utf-8", newline="") if args.out else out
        try:
            async with engine.connect() as conn:
                async for chunk in chain.export(conn, args.format):
                    target.write(chunk)
        finally:
            if args.out:
                target.close()
        return EXIT_OK

    async def run() -> int:
        try:
            await upgrade(engine)
            return await (verify() if args.ledger_command == "verify" else export())
        finally:
            await engine.dispose()

    engine = create_engine(settings.database_url)
    return asyncio.run(run())


def _clients(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    async def work(service: Any) -> int:
        if args.clients_command == "add":
            client, token, secret = await service.add_client(args.name, args.owner)
            print(f"client:          {client.name}", file=out)
            print(f"owner:           {client.owner or '-'}", file=out)
            print(f"token:           {token}", file=out)
            print(f"callback secret: {secret}", file=out)
            print(
                "Store both now: they are not shown again "
                "(the token is kept hashed, the secret sealed with the server key).",
                file=out,
            )
        elif args.clients_command == "list":
            for c in await service.list_clients():
                state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
                print(f"{c.name}\t{c.owner or '-'}\t{state}", file=out)
        else:
            await service.revoke_client(args.name)
            print(f"client {args.name} revoked", file=out)
        return EXIT_OK

    return asyncio.run(_with_service(settings, work))


EXIT_BY_STATUS = {"approved": 0, "denied": 1, "expired": 2, "cancelled": 2, "pending": 2}
EXIT_ERROR = 3


def _describe(request: dict[str, Any]) -> str:
    decision = request.get("decision") or {}
    who = ", ".join(decision.get("by") or []) or "-"
    line = f"{request['id']} {request['status']}"
    if request["status"] != "pending":
        line += f" by {who}"
        if decision.get("reason"):
            line += f": {decision['reason']}"
    return line


def _request(args: argparse.Namespace, out: TextIO) -> int:
    from countersign.client import ApiError, Client

    try:
        client = Client()
        created = client.request(
            action=args.action,
            resource=args.resource,
            reason=args.reason,
            params=dict(args.param),
            context=dict(args.context) or None,
            requested_by=args.requested_by,
            callback_url=args.callback_url,
            ttl_seconds=args.ttl,
            idempotency_key=args.idempotency_key,
        )
        result = created
        if args.wait and created["status"] == "pending":
            print(f"{created['id']} pending: waiting up to {args.timeout:g}s", file=sys.stderr)
            result = client.wait(created["id"], args.timeout)
            if result["status"] == "pending" and args.cancel_on_timeout:
                result = client.cancel(created["id"], "timed out waiting for approval")
    except ApiError as exc:
        print(f"countersign: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(result, indent=2) if args.json else _describe(result), file=out)
    if not args.wait and result["status"] == "pending":
        return EXIT_OK
    return EXIT_BY_STATUS.get(result["status"], EXIT_ERROR)


def _mcp_gate(args: argparse.Namespace) -> int:
    import shlex

    from countersign.agent.mcp_gate import serve
    from countersign.client import ApiError

    # Standard output is the MCP channel: everything human goes to standard error.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        asyncio.run(
            serve(
                shlex.split(args.upstream),
                prefix=args.policy_action_prefix,
                resource=args.resource,
                wait_seconds=args.timeout,
                requested_by=args.requested_by,
                issuer=args.issuer,
            )
        )
    except (ApiError, ValueError, OSError, ExceptionGroup) as exc:
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup):  # the SDK's task groups wrap failures
            cause = cause.exceptions[0]
        print(f"countersign: mcp-gate: {cause}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _history(args: argparse.Namespace, out: TextIO) -> int:
    import csv

    from countersign.client import ApiError, Client

    filters = {
        "status": args.status,
        "action": args.action,
        "resource": args.resource,
        "requested_by": args.requested_by,
        "approver": args.approver,
        "since": args.since,
        "until": args.until,
    }
    try:
        items = list(Client().history(limit=args.limit, **filters))
    except ApiError as exc:
        print(f"countersign: {exc}", file=sys.stderr)
        return EXIT_ERROR
    columns = ["id", "status", "action", "resource", "requested_by", "created_at", "decided_by"]

    def row(item: dict[str, Any]) -> list[str]:
        by = ", ".join((item.get("decision") or {}).get("by") or [])
        values = [item.get(c) for c in columns[:-1]] + [by]
        return ["" if v is None else str(v) for v in values]

    if args.format == "json":
        print(json.dumps(items, indent=2), file=out)
    elif args.format == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(row(i) for i in items)
    else:
        rows = [columns] + [row(i) for i in items]
        widths = [max(len(r[n]) for r in rows) for n in range(len(columns))]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
    return EXIT_OK


def _keys(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from datetime import UTC, datetime

    from countersign.crypto import SecretBox
    from countersign.keyring import rotate_receipt_key
    from storage import create_engine
    from storage.migrate import upgrade

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
            kid = await rotate_receipt_key(
                engine, SecretBox(settings.server_key()), datetime.now(UTC)
            )
        finally:
            await engine.dispose()
        print(f"new signing key {kid}; the previous key stays in the JWKS", file=out)
        print("until its receipts expire. Running servers pick it up within 30 s.", file=out)
        return EXIT_OK

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; the exit code is returned (and used by the console script)."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.command == "request":  # pipeline commands: no server settings involved
        return _request(args, out)
    if args.command == "history":
        return _history(args, out)
    if args.command == "mcp-gate":
        return _mcp_gate(args)
    settings: Settings | None = None
    try:
        settings = load_settings()
        if args.command == "serve":
            return _serve(args, settings)
        handler = {
            "db": _db,
            "policy": _policy,
            "ledger": _ledger,
            "clients": _clients,
            "keys": _keys,
            "slack": _slack,
            "teams": _teams,
        }
        return handler[args.command](args, settings, out)
    except ConfigError as exc:
        print(f"countersign: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyInvalid as exc:
        if getattr(args, "policy", None) or getattr(args, "file", None):
            source = "--policy" if getattr(args, "policy", None) else "policy file"
        else:
            source = "COUNTERSIGN_POLICY" if settings and settings.policy else "policy"
        if len(exc.problems) == 1:
            print(f"countersign: {source}: {exc.problems[0]}", file=sys.stderr)
        else:
            print(f"countersign: {source}: {len(exc.problems)} problems:", file=sys.stderr)
            print(render_problems(exc.problems), file=sys.stderr)
        return EXIT_USAGE
    except CountersignError as exc:
        print(f"countersign: {exc}", file=sys.stderr)
        return EXIT_FAILED


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
