"""An MCP server (stdio) in front of another that asks Countersign before each tool call.

``countersign mcp-gate --upstream "<command>"`` starts the upstream server as a
child process, lists its tools unchanged, and forwards ``tools/call`` only once
Countersign approves action ``<prefix><tool>`` with the tool's arguments as
params (a policy ``allow`` approves at once, so those pass straight through).
It forwards the approved arguments, which approvers may have edited, after
checking the receipt. Anything else (denial, expiry, timeout, Countersign
unreachable, a bad receipt) is an MCP tool error naming why: the gate fails
closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client, stdio_server
from mcp import types as mcp_types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from countersign import __version__
from countersign.agent.client import ApiError, AsyncClient
from countersign.agent.receipts import verify_receipt
from countersign.agent.types import Decision, ReceiptInvalid

__all__ = ["McpGate", "action_for", "serve"]

log = logging.getLogger(__name__)

ACTION_MAX = 128
_NOT_IN_ACTION = re.compile(r"[^a-z0-9._:-]")
# Countersign's own credentials stay with the gate: the upstream server is what is gated.
_WITHHELD_ENV = ("COUNTERSIGN_TOKEN",)


def action_for(prefix: str, tool: str) -> str:
    """The Countersign action of a tool: prefix + tool name, lower-cased, other characters ``-``."""
    return _NOT_IN_ACTION.sub("-", (prefix + tool).lower())[:ACTION_MAX]


def _tool_error(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(is_error=True, content=[mcp_types.TextContent(text=text)])


class McpGate:
    """The gate's handlers: list tools through, call tools once approved."""

    def __init__(
        self,
        upstream: ClientSession,
        client: AsyncClient,
        *,
        resource: str,
        prefix: str = "mcp.",
        timeout: float = 600.0,
        requested_by: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.client = client
        self.resource = resource
        self.prefix = prefix
        self.timeout = timeout
        self.requested_by = requested_by
        self.issuer = issuer

    def server(self, instructions: str | None = None) -> Server[Any]:
        """A low-level MCP server wired to this gate."""
        return Server(
            "countersign-mcp-gate",
            version=__version__,
            instructions=instructions,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        """The upstream's tools, unchanged (pages included)."""
        return await self.upstream.list_tools(params=params)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        """Forward the call once approved; otherwise a tool error saying why."""
        name = params.name
        arguments: dict[str, Any] = dict(params.arguments or {})
        action = action_for(self.prefix, name)
        try:
            decision = await self._decide(action, name, arguments)
        except ApiError as exc:
            log.warning("tool %s not run: Countersign unavailable: %s", name, exc)
            return _tool_error(f"{name} was not run: Countersign could not be asked ({exc})")
        if not decision.approved:
            log.info("tool %s not run: %s", name, decision.describe())
            return _tool_error(_refusal(name, decision, self.timeout))
        approved = dict(decision.approved_params or {})
        try:
            # The JWKS fetch (cached) is blocking I/O: keep it off the event loop.
            await asyncio.to_thread(
                verify_receipt,
                decision.receipt or "",
                self.client.jwks_url,
                action,
                approved,
                issuer=self.issuer,
                expected_resource=self.resource,
                expected_request_id=decision.id,
            )
        except ReceiptInvalid as exc:
            log.warning("tool %s not run: %s", name, exc)
            return _tool_error(f"{name} was not run: {exc}")
        log.info("tool %s approved (%s), forwarding", name, decision.id)
        return await self.upstream.call_tool(name, approved)

    async def _decide(self, action: str, name: str, arguments: Mapping[str, Any]) -> Decision:
        decision = await self.client.request(
            action,
            self.resource,
            f"MCP tool call: {name}",
            arguments,
            requested_by=self.requested_by,
            context={"gate": "mcp", "tool": name},
        )
        if not decision.final:
            decision = await self.client.wait(decision.id, self.timeout)
        if decision.final:
            return decision
        try:
            # Nobody will act on an approval after we gave up: withdraw the request.
            cancelled = await self.client.cancel(decision.id, "timed out waiting for approval")
        except ApiError as exc:
            if exc.status != HTTPStatus.CONFLICT:
                raise
            return await self.client.get(decision.id)  # decided meanwhile
        return decision if cancelled.status == "cancelled" else cancelled


def _refusal(name: str, decision: Decision, timeout: float) -> str:
    who = ", ".join(decision.decided_by) or "-"
    why = "; ".join(decision.reasons) or "no reason given"
    if decision.status == "denied":
        return f"Countersign denied {name} (by {who}): {why} [{decision.id}]"
    if decision.status == "expired":
        return f"{name} was not run: nobody approved it in time [{decision.id}]"
    if decision.status == "cancelled":
        return f"{name} was not run: the request was cancelled by {who}: {why} [{decision.id}]"
    return f"{name} was not run: no decision within {timeout:g}s [{decision.id}]"


def upstream_parameters(command: Sequence[str]) -> StdioServerParameters:
    """How to start the upstream server: its command, our environment minus our token."""
    if not command:
        raise ValueError("--upstream is empty")
    env = {k: v for k, v in os.environ.items() if k not in _WITHHELD_ENV}
    return StdioServerParameters(command=command[0], args=list(command[1:]), env=env)


async def serve(
    command: Sequence[str],
    *,
    prefix: str = "mcp.",
    resource: str | None = None,
    wait_seconds: float = 600.0,
    requested_by: str | None = None,
    issuer: str | None = None,
    client: AsyncClient | None = None,
) -> None:
    """Run the gate on this process's stdin/stdout until the MCP client hangs up."""
    api = client or AsyncClient()
    async with (
        api,
        stdio_client(upstream_parameters(command)) as (read, write),
        ClientSession(read, write) as upstream,
    ):
        init = await upstream.initialize()
        gate = McpGate(
            upstream,
            api,
            resource=resource or f"mcp:{init.server_info.name}",
            prefix=prefix,
            timeout=wait_seconds,
            requested_by=requested_by,
            issuer=issuer,
        )
        server = gate.server(init.instructions)
        log.info("gating %s (%s) with action prefix %r", init.server_info.name, command[0], prefix)
        async with stdio_server() as (server_read, server_write):
            await server.run(server_read, server_write, server.create_initialization_options())
