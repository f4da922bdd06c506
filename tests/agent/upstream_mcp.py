"""A small upstream MCP server for the gate's tests; every tool call is logged to UPSTREAM_LOG."""

from __future__ import annotations

import json
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("files", instructions="Reads and deletes pretend files.")


def _log(tool: str, **arguments: object) -> None:
    with open(os.environ["UPSTREAM_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    _log("read_file", path=path)
    return f"contents of {path}"


@server.tool()
def delete_file(path: str, recursive: bool = False) -> str:
    """Delete a file (or a tree)."""
    _log("delete_file", path=path, recursive=recursive)
    return f"deleted {path}" + (" and everything under it" if recursive else "")


if __name__ == "__main__":
    server.run("stdio")
