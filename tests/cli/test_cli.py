"""The command line, run in-process and, for ``serve``, as a real process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from countersign.cli import main
from countersign.policy import EXAMPLE_POLICY_PATH
from storage.migrate import head_revision


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run commands against a private SQLite file, in a directory with no .env."""
    monkeypatch.chdir(tmp_path)
    for var in ("COUNTERSIGN_DATABASE_URL", "DATABASE_URL", "COUNTERSIGN_POLICY"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "cs.db"
    monkeypatch.setenv("COUNTERSIGN_DATABASE_URL", f"sqlite:///{db}")
    return db


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_policy_check_ok_and_problems(tmp_path: Path, sqlite_env: Path) -> None:
    code, text = run("policy", "check", str(EXAMPLE_POLICY_PATH))
    assert code == 0
    assert "OK (4 rules, 2 groups)" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n  sre: [alice@example.com]\nrules:\n"
        "  - name: r1\n    approvers: [group:nope]\n"
        "  - name: r2\n    quorum: 0\n    approvers: [bob@example.com]\n"
    )
    code, text = run("policy", "check", str(bad))
    assert code == 1
    lines = text.splitlines()
    assert any(line.startswith(f"{bad}:5:") and "nope" in line for line in lines)
    assert any(line.startswith(f"{bad}:7:") and "quorum" in line for line in lines)
    assert lines[-1] == f"{bad}: {len(lines) - 1} problem(s)"


def test_policy_check_uses_env_then_example(
    tmp_path: Path, sqlite_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, text = run("policy", "check")
    assert code == 0
    assert str(EXAMPLE_POLICY_PATH) in text
    (tmp_path / "countersign.yaml").write_text(
        "rules:\n  - name: all\n    match: {}\n    decision: deny\n"
    )
    code, text = run("policy", "check")
    assert text.startswith("countersign.yaml: OK (1 rules")


def test_policy_explain(sqlite_env: Path) -> None:
    code, text = run(
        "policy",
        "explain",
        "--action",
        "db.export",
        "--resource",
        "prod/customers",
        "--param",
        "rows=120000",
    )
    assert code == 0
    assert "prod-export" in text
    assert "safe-reads" in text and "db.read*" in text  # why the earlier rule did not match
    code, text = run(
        "policy",
        "explain",
        "--action",
        "db.export",
        "--resource",
        "prod/customers",
        "--param",
        "rows=5",
    )
    assert "default" in text
    assert "params.rows > 10000" in text


def test_clients_lifecycle(sqlite_env: Path) -> None:
    code, text = run("clients", "add", "copilot", "--owner", "Owen@Example.com")
    assert code == 0
    token = next(line.split()[1] for line in text.splitlines() if line.startswith("token:"))
    secret = next(
        line.split()[2] for line in text.splitlines() if line.startswith("callback secret:")
    )
    assert secret.startswith("whsec_")
    assert (sqlite_env.parent / "cs.db.key").stat().st_mode & 0o777 == 0o600
    assert token.startswith("cs_") and len(token) > 40
    assert "owen@example.com" in text
    code, text = run("clients", "add", "copilot")
    assert code == 1
    code, text = run("clients", "list")
    assert text.strip() == "copilot\towen@example.com\tactive"
    assert run("clients", "revoke", "copilot")[0] == 0
    assert "revoked" in run("clients", "list")[1]
    assert run("clients", "revoke", "copilot")[0] == 1
    stored = sqlite_env.read_bytes().decode("latin-1")
    assert token not in stored  # only the hash is stored
    assert secret not in stored  # sealed


def test_db_upgrade_is_idempotent(sqlite_env: Path) -> None:
    head = head_revision()
    assert head == "0007"  # the newest migration (update with each new one)
    assert run("db", "upgrade") == (0, f"database is at revision {head}\n")
    assert run("db", "upgrade") == (0, f"database is at revision {head}\n")


BAD_CONFIG = [
    ({"COUNTERSIGN_DATABASE_URL": "mysql://x/y"}, "COUNTERSIGN_DATABASE_URL"),
    ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
    ({"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN"),
    ({"COUNTERSIGN_PUBLIC_URL": "example.com"}, "COUNTERSIGN_PUBLIC_URL"),
    ({"MICROSOFT_APP_ID": "00000000-0000-0000-0000-000000000001"}, "MICROSOFT_APP_PASSWORD"),
    ({"COUNTERSIGN_DATABASE_POOL_SIZE": "0"}, "COUNTERSIGN_DATABASE_POOL_SIZE"),
    ({"COUNTERSIGN_CHAT_LEASE_SECONDS": "5"}, "COUNTERSIGN_CHAT_LEASE_SECONDS"),
]


@pytest.mark.parametrize(("env", "variable"), BAD_CONFIG, ids=[v for _, v in BAD_CONFIG])
def test_bad_configuration_is_one_line_naming_the_variable(
    env: dict[str, str],
    variable: str,
    sqlite_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["db", "upgrade"], out=io.StringIO()) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert variable in err


def test_unreadable_policy_stops_serve(
    sqlite_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COUNTERSIGN_POLICY", "/nonexistent/policy.yaml")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("countersign: COUNTERSIGN_POLICY: /nonexistent/policy.yaml:0: ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_on_sqlite_with_the_example_policy(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COUNTERSIGN_", "SLACK_", "MICROSOFT_", "TEAMS_"))
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "countersign", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    body = resp.read()
                    break
            except OSError:
                time.sleep(0.1)
        assert body == b'{"status": "ok"}'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            assert resp.status == 200
        assert (tmp_path / "countersign.db").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "example.yaml: 4 rules" in out
    assert "Slack is off" in out and "Teams is off" in out


def test_keys_rotate(sqlite_env: Path) -> None:
    code, first = run("keys", "rotate")
    assert code == 0
    code, second = run("keys", "rotate")
    kid1, kid2 = first.split()[3].rstrip(";"), second.split()[3].rstrip(";")
    assert kid1.startswith("key_") and kid2.startswith("key_") and kid1 != kid2
