"""``countersign mcp-gate`` driven by the MCP SDK's client over stdio, in front of a real upstream."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types

from countersign.agent.mcp_gate import action_for
from tests.agent.conftest import pending_id
from tests.api.conftest import Api

UPSTREAM = Path(__file__).with_name("upstream_mcp.py")


@asynccontextmanager
async def _session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """Where the upstream server logs the calls it ran."""
    return tmp_path / "upstream.jsonl"


def _upstream_params(log_file: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=[str(UPSTREAM)], env={"UPSTREAM_LOG": str(log_file)}
    )


def _gate_params(log_file: Path, *extra: str) -> StdioServerParameters:
    env = {
        "COUNTERSIGN_URL": os.environ["COUNTERSIGN_URL"],
        "COUNTERSIGN_TOKEN": os.environ["COUNTERSIGN_TOKEN"],
        "UPSTREAM_LOG": str(log_file),
    }
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "countersign",
            "mcp-gate",
            "--upstream",
            f"{sys.executable} {UPSTREAM}",
            "--policy-action-prefix",
            "mcp.",
            *extra,
        ],
        env=env,
    )


def _ran(log_file: Path) -> list[dict[str, Any]]:
    if not log_file.exists():
        return []
    return [json.loads(line) for line in log_file.read_text().splitlines()]


def _text(result: mcp_types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp_types.TextContent)
    return block.text


async def test_gate_lists_upstream_tools_and_gates_calls(api: Api, log_file: Path) -> None:
    async with _session(_upstream_params(log_file)) as direct:
        upstream_tools = (await direct.list_tools()).tools
    async with _session(_gate_params(log_file)) as gate:
        tools = (await gate.list_tools()).tools
        assert [t.model_dump() for t in tools] == [t.model_dump() for t in upstream_tools]
        assert {t.name for t in tools} == {"read_file", "delete_file"}

        # The policy allows mcp.read_*: straight through, no one asked.
        read = await gate.call_tool("read_file", {"path": "/etc/motd"})
        assert not read.is_error and _text(read) == "contents of /etc/motd"
        allowed = await api.service.get_request(await pending_id(api))
        assert allowed.action == "mcp.read_file" and allowed.decided_by == ("policy:mcp-reads",)
        assert allowed.resource == "mcp:files"

        # mcp.* needs a person: approved as asked.
        call = asyncio.create_task(gate.call_tool("delete_file", {"path": "/tmp/a"}))
        request_id = await pending_id(api, 2)
        await api.until_waiting()
        pending = await api.service.get_request(request_id)
        assert pending.action == "mcp.delete_file"
        assert pending.params == {"path": "/tmp/a"}
        await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")
        done = await call
        assert not done.is_error and _text(done) == "deleted /tmp/a"

        # Approved with changes: the edited arguments are what runs.
        call = asyncio.create_task(gate.call_tool("delete_file", {"path": "/", "recursive": True}))
        request_id = await pending_id(api, 3)
        await api.until_waiting()
        await api.service.cast_vote(
            request_id, "bob@example.com", "teams", "approve", edited_params={"path": "/tmp/b"}
        )
        done = await call
        assert _text(done) == "deleted /tmp/b"

        # Denied: a tool error with the reason, and the upstream never sees the call.
        call = asyncio.create_task(gate.call_tool("delete_file", {"path": "/home"}))
        request_id = await pending_id(api, 4)
        await api.until_waiting()
        await api.service.cast_vote(
            request_id, "alice@example.com", "slack", "deny", comment="never delete /home"
        )
        denied = await call
        assert denied.is_error
        assert "never delete /home" in _text(denied)
        assert "alice@example.com" in _text(denied)

    assert _ran(log_file) == [
        {"tool": "read_file", "arguments": {"path": "/etc/motd"}},
        {"tool": "delete_file", "arguments": {"path": "/tmp/a", "recursive": False}},
        {"tool": "delete_file", "arguments": {"path": "/tmp/b", "recursive": False}},
    ]


async def test_gate_times_out_and_fails_closed(api: Api, log_file: Path) -> None:
    async with _session(_gate_params(log_file, "--timeout", "1")) as gate:
        result = await gate.call_tool("delete_file", {"path": "/tmp/c"})
        assert result.is_error and "no decision within 1s" in _text(result)
        stored = await api.service.get_request(await pending_id(api))
        assert stored.status.value == "cancelled"
    assert _ran(log_file) == []


async def test_gate_without_countersign_refuses_to_start(log_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COUNTERSIGN_TOKEN"}
    env["COUNTERSIGN_URL"] = "http://127.0.0.1:9"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "countersign",
        "mcp-gate",
        "--upstream",
        f"{sys.executable} {UPSTREAM}",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 3
    assert out == b""  # standard output is the MCP channel
    assert b"COUNTERSIGN_TOKEN is not set" in err


def test_tool_names_become_actions() -> None:
    assert action_for("mcp.", "read_file") == "mcp.read_file"
    assert action_for("mcp.github.", "Create Issue!") == "mcp.github.create-issue-"
    assert len(action_for("mcp.", "x" * 300)) == 128
