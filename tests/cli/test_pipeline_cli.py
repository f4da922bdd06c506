"""``countersign request`` and ``countersign history`` against a real running server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator

import pytest

from countersign.cli import main
from countersign.ports import HistoryQuery
from tests.api.conftest import Api, running


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture
async def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    """A running server; its URL and a client token in the environment, as a CI job has them."""
    async with running(database_url) as api:
        monkeypatch.setenv("COUNTERSIGN_URL", api.url("/").rstrip("/"))
        monkeypatch.setenv("COUNTERSIGN_TOKEN", await api.client("ci-bot", None))
        yield api


EXPORT_ARGS = (
    "request",
    "--action",
    "db.export",
    "--resource",
    "prod/customers",
    "--reason",
    "nightly export",
    "--param",
    "rows=120000",
    "--requested-by",
    "dana@example.com",
)


async def _pending_id(api: Api) -> str:
    for _ in range(500):
        items = await api.service.history(HistoryQuery(limit=1))
        if items:
            return items[0].id
        await asyncio.sleep(0.01)
    raise AssertionError("no request was created")


@pytest.mark.parametrize(
    ("votes", "code", "words"),
    [
        (
            [("alice@example.com", "approve"), ("carol@example.com", "approve")],
            0,
            "approved by alice@example.com, carol@example.com",
        ),
        ([("bob@example.com", "deny")], 1, "denied by bob@example.com"),
        (
            [("dana@example.com", "deny")],
            2,
            "cancelled by dana@example.com: withdrawn by the requester",
        ),
    ],
    ids=["approved", "denied", "withdrawn"],
)
async def test_request_wait_exit_codes(
    pipeline: Api, votes: list[tuple[str, str]], code: int, words: str
) -> None:
    running = asyncio.create_task(
        asyncio.to_thread(_run, *EXPORT_ARGS, "--wait", "--timeout", "30")
    )
    request_id = await _pending_id(pipeline)
    await pipeline.until_waiting()
    for voter, choice in votes:
        await pipeline.service.cast_vote(request_id, voter, "slack", choice)
    exit_code, out = await running
    assert exit_code == code
    assert out.strip() == f"{request_id} {words}"


async def test_request_times_out_and_can_cancel(pipeline: Api) -> None:
    code, out = await asyncio.to_thread(
        _run, *EXPORT_ARGS, "--wait", "--timeout", "1", "--cancel-on-timeout"
    )
    assert code == 2
    assert " cancelled by ci-bot: timed out waiting for approval" in out
    code, out = await asyncio.to_thread(_run, *EXPORT_ARGS, "--wait", "--timeout", "1")
    assert code == 2
    assert out.strip().endswith("pending")


async def test_request_decided_by_policy_and_json(pipeline: Api) -> None:
    code, out = await asyncio.to_thread(
        _run,
        "request",
        "--action",
        "db.read.rows",
        "--resource",
        "prod/x",
        "--reason",
        "r",
        "--wait",
        "--json",
    )
    assert code == 0
    body = json.loads(out)
    assert body["status"] == "approved"
    assert body["decision"]["by"] == ["policy:safe-reads"]
    assert body["receipt"]


async def test_request_errors_exit_3(pipeline: Api, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await asyncio.to_thread(
        _run, "request", "--action", "Not Valid", "--resource", "r", "--reason", "x"
    )
    assert code == 3
    assert "422" in capsys.readouterr().err


async def test_history_formats(pipeline: Api) -> None:
    for i in range(3):
        code, _ = await asyncio.to_thread(
            _run, "request", "--action", "db.read", "--resource", f"prod/t{i}", "--reason", "r"
        )
        assert code == 0
    code, out = await asyncio.to_thread(_run, "history", "--format", "json", "--limit", "2")
    assert code == 0
    assert [r["resource"] for r in json.loads(out)] == ["prod/t2", "prod/t1"]
    code, out = await asyncio.to_thread(_run, "history", "--format", "csv", "--resource", "prod/t0")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:3] == ["id", "status", "action"]
    assert [r[3] for r in rows[1:]] == ["prod/t0"]
    code, out = await asyncio.to_thread(_run, "history")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "status", "action"]
    assert len(lines) == 4
