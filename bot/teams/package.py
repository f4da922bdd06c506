"""The Teams app package for ``countersign teams package``: manifest and icons in a zip.

Upload it in Teams (Apps → Manage your apps → Upload an app) or through the
Teams admin center. The icons are drawn here (a plain PNG encoder), so the
package needs no image files or libraries.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
import zlib
from typing import Any
from urllib.parse import urlparse

__all__ = ["MANIFEST_VERSION", "manifest", "package", "png"]

MANIFEST_VERSION = "1.16"
COMMANDS = (
    ("help", "What Countersign can do"),
    ("pending", "Requests waiting for your vote"),
    ("show", "One request: show <id>"),
    ("history", "Decisions: history status:denied by:dana@example.com"),
)


def png(size: int, pixel: Any) -> bytes:
    """A square RGBA PNG, ``size`` pixels wide, coloured by ``pixel(x, y) -> (r, g, b, a)``."""
    raw = bytearray()
    for y in range(size):
        raw.append(0)  # filter: none
        for x in range(size):
            raw.extend(pixel(x, y))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def _check_mark(x: float, y: float) -> bool:
    """A tick: two strokes, in a unit square."""

    def near(ax: float, ay: float, bx: float, by: float) -> bool:
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
        return (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2 < 0.0064

    return near(0.25, 0.52, 0.43, 0.70) or near(0.43, 0.70, 0.76, 0.32)


def _color(x: int, y: int) -> tuple[int, int, int, int]:
    u, v = x / 192, y / 192
    return (255, 255, 255, 255) if _check_mark(u, v) else (29, 53, 87, 255)


def _outline(x: int, y: int) -> tuple[int, int, int, int]:
    return (255, 255, 255, 255) if _check_mark(x / 32, y / 32) else (0, 0, 0, 0)


def manifest(app_id: str, public_url: str) -> dict[str, Any]:
    """The Teams app manifest: the bot in personal, team and group chat scopes, with commands."""
    host = urlparse(public_url).hostname or "localhost"
    commands = [{"title": title, "description": text} for title, text in COMMANDS]
    return {
        "$schema": (
            "https://developer.microsoft.com/json-schemas/teams/v1.16/MicrosoftTeams.schema.json"
        ),
        "manifestVersion": MANIFEST_VERSION,
        "version": "1.0.0",
        # The app's own id: stable per bot, derived from the bot id.
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"countersign:{app_id}")),
        "developer": {
            "name": "Countersign",
            "websiteUrl": public_url,
            "privacyUrl": public_url,
            "termsOfUseUrl": public_url,
        },
        "name": {"short": "Countersign", "full": "Countersign approvals"},
        "description": {
            "short": "Approve or deny what AI agents and pipelines want to do.",
            "full": (
                "Countersign asks the people who own the risk before an agent or pipeline "
                "runs a privileged action: approve, deny or approve with changes on a card, "
                "with no self-approval, quorum rules and a tamper-evident ledger."
            ),
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": "#1D3557",
        "bots": [
            {
                "botId": app_id,
                "scopes": ["personal", "team", "groupChat"],
                "supportsFiles": False,
                "isNotificationOnly": False,
                "commandLists": [
                    {"scopes": ["personal", "team", "groupChat"], "commands": commands}
                ],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [host],
    }


def package(app_id: str, public_url: str) -> bytes:
    """The zip Teams accepts: ``manifest.json``, ``color.png`` (192 px), ``outline.png`` (32 px)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest(app_id, public_url), indent=2))
        zf.writestr("color.png", png(192, _color))
        zf.writestr("outline.png", png(32, _outline))
    return out.getvalue()
