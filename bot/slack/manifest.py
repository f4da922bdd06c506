"""The Slack app manifest for ``countersign slack manifest`` (paste it at api.slack.com/apps)."""

from __future__ import annotations

from typing import Any

__all__ = ["BOT_SCOPES", "manifest"]

# What each scope is for: post and update cards, DM people, read who clicked
# (users:read + users:read.email: the e-mail every rule compares), find
# approvers by e-mail, and the slash command. The history and read scopes serve
# one thing: finding our own card after a post whose answer was lost (a timeout,
# a replica killed mid-call), by its metadata, instead of posting it twice
# (``SlackMessenger.find``); channel names are turned into ids for that.
BOT_SCOPES = (
    "chat:write",
    "chat:write.public",
    "im:write",
    "users:read",
    "users:read.email",
    "commands",
    "channels:history",
    "groups:history",
    "im:history",
    "channels:read",
    "groups:read",
)


def manifest(public_url: str, *, name: str = "Countersign") -> dict[str, Any]:
    """A complete manifest whose interactivity and slash command point at ``public_url``."""
    events = public_url.rstrip("/") + "/slack/events"
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name,
            "description": "Action-level approvals for AI agents and automation.",
            "background_color": "#1d3557",
            "long_description": (
                "Countersign asks the people who own the risk before an agent or pipeline "
                "runs a privileged action: approve, deny or approve with changes, right "
                "here in Slack. No self-approval, quorum rules, and a tamper-evident "
                "ledger of every decision."
            ),
        },
        "features": {
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [
                {
                    "command": "/countersign",
                    "url": events,
                    "description": "Pending approvals, a request, or history",
                    "usage_hint": "help | pending | show <id> | history [status:..] [by:..]",
                    "should_escape": False,
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "interactivity": {"is_enabled": True, "request_url": events},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }
