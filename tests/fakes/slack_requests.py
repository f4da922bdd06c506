"""Signed inbound Slack requests, built the way Slack sends them to a Request URL.

Every builder returns ``(body, headers)``: the raw bytes to POST and the headers
Slack would send with them. Interactivity payloads (``block_actions``,
``view_submission``) travel as one form field, ``payload=<JSON>``; slash
commands are plain form fields. Requests are signed with the v0 scheme:
``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{raw body}"))``
with ``X-Slack-Request-Timestamp: {timestamp}``.

The signing keywords (``**signing``, see :class:`Signing`) make the broken
variants a receiver must refuse: a stale timestamp, a wrong or missing
signature, and Slack's retry headers (``X-Slack-Retry-Num`` /
``X-Slack-Retry-Reason``).

Only the standard library is used, so bench scripts can import this module.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import parse_qs, urlencode

# The workspace, app and bot the fakes pretend to be (FakeSlack uses the same).
TEAM_ID = "T0COUNTER"
TEAM_DOMAIN = "countersign-test"
APP_ID = "A0COUNTER"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
VERIFICATION_TOKEN = "legacy-verification-token"  # deprecated by Slack, still sent

# Who clicks and where, unless a test says otherwise (FakeSlack's default directory).
DEFAULT_USER_ID = "U0ALICE"
DEFAULT_USER_NAME = "alice"
DEFAULT_CHANNEL_ID = "C0APPROVALS"
DEFAULT_CHANNEL_NAME = "approvals"

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
STALE_AFTER_SECONDS = 5 * 60  # what Slack's SDKs (and ours) refuse

_counter = itertools.count(1)


class Signing(TypedDict, total=False):
    """How to sign (or mis-sign) a request. All optional; the default is a valid signature now."""

    timestamp: int | str  # X-Slack-Request-Timestamp; default: now
    stale: bool  # timestamp six minutes in the past (beyond the five-minute window)
    sign_with: str  # sign with this secret instead (a wrong signature)
    signature: str  # send exactly this X-Slack-Signature
    unsigned: bool  # no X-Slack-Signature header at all
    no_timestamp: bool  # no X-Slack-Request-Timestamp header at all
    retry_num: int  # X-Slack-Retry-Num
    retry_reason: str  # X-Slack-Retry-Reason, e.g. "http_timeout"


def sign(secret: str, body: bytes | str, timestamp: int | str) -> str:
    """The ``X-Slack-Signature`` value for ``body`` sent at ``timestamp``: ``v0=<hex>``."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + str(timestamp).encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(
    body: bytes,
    secret: str,
    *,
    content_type: str = FORM_CONTENT_TYPE,
    **signing: Unpack[Signing],
) -> tuple[bytes, dict[str, str]]:
    """Headers Slack sends with ``body`` (any raw body: form or Events API JSON)."""
    if "timestamp" in signing:
        timestamp = str(signing["timestamp"])
    elif signing.get("stale"):
        timestamp = str(int(time.time()) - STALE_AFTER_SECONDS - 60)
    else:
        timestamp = str(int(time.time()))
    headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
    if not signing.get("no_timestamp"):
        headers["X-Slack-Request-Timestamp"] = timestamp
    if not signing.get("unsigned"):
        headers["X-Slack-Signature"] = signing.get("signature") or sign(
            signing.get("sign_with", secret), body, timestamp
        )
    if "retry_num" in signing:
        headers["X-Slack-Retry-Num"] = str(signing["retry_num"])
    if "retry_reason" in signing:
        headers["X-Slack-Retry-Reason"] = signing["retry_reason"]
    return body, headers


def form_body(fields: Mapping[str, str]) -> bytes:
    """Form-encode ``fields`` as Slack does (UTF-8, ``application/x-www-form-urlencoded``)."""
    return urlencode(dict(fields)).encode()


def payload_body(payload: Mapping[str, Any]) -> bytes:
    """An interactivity body: the one form field ``payload`` holding compact JSON."""
    return form_body({"payload": json.dumps(payload, separators=(",", ":"))})


def decode_payload(body: bytes) -> dict[str, Any]:
    """The JSON ``payload`` of an interactivity body (for assertions)."""
    parsed: dict[str, Any] = json.loads(parse_qs(body.decode())["payload"][0])
    return parsed


def decode_form(body: bytes) -> dict[str, str]:
    """The fields of a form body such as a slash command (for assertions)."""
    return {key: values[0] for key, values in parse_qs(body.decode()).items()}


def new_trigger_id() -> str:
    """A fresh trigger id shaped like Slack's (``<digits>.<digits>.<hex>``)."""
    return f"{int(time.time() * 1000)}.{next(_counter)}.{secrets.token_hex(16)}"


def _action_ts() -> str:
    return f"{time.time():.6f}"


def _user(user_id: str, user_name: str, team_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def block_actions_payload(
    *,
    action_id: str,
    value: str | None = None,
    block_id: str = "decision",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    message_ts: str = "1700000000.000100",
    message: Mapping[str, Any] | None = None,
    response_url: str = "https://hooks.slack.com/actions/T0COUNTER/1/fake",
    trigger_id: str | None = None,
    button_text: str = "Approve",
    api_app_id: str = APP_ID,
    verification_token: str = VERIFICATION_TOKEN,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``block_actions`` payload of one button click on a message.

    ``message`` is the message as Slack shows it in the payload (for instance
    ``FakeSlack.messages[key].as_payload()``); by default a bot message holding
    one actions block with the clicked button. ``extra`` is deep-merged last.
    """
    action = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": _action_ts(),
    }
    if value is None:
        del action["value"]  # Slack omits a button's value when it has none
    if message is None:
        button = {k: action[k] for k in ("type", "action_id", "text", "value") if k in action}
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": "Approval request",
            "ts": message_ts,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": api_app_id,
            "team": team_id,
            "blocks": [{"type": "actions", "block_id": block_id, "elements": [button]}],
        }
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "token": verification_token,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": dict(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    return _deep_merge(payload, extra)


def block_actions(
    *, secret: str, signing: Signing | None = None, **fields: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed ``block_actions`` request; ``fields`` are :func:`block_actions_payload`'s."""
    return signed(payload_body(block_actions_payload(**fields)), secret, **(signing or {}))


def _state_value(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return {"type": "plain_text_input", "value": value}


def view_submission_payload(
    *,
    callback_id: str,
    values: Mapping[str, Mapping[str, str | Mapping[str, Any] | None]] | None = None,
    private_metadata: str = "",
    view_id: str = "V0FAKEVIEW",
    blocks: list[dict[str, Any]] | None = None,
    title: str = "Countersign",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    trigger_id: str | None = None,
    api_app_id: str = APP_ID,
    verification_token: str = VERIFICATION_TOKEN,
    response_urls: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``view_submission`` payload of a modal.

    ``values`` maps block_id → action_id → the typed text (``None`` for an empty
    optional input), or a full state entry (a dict) for other element types.
    Without ``blocks``, one input block per value is made up to match.
    """
    values = values or {}
    state = {
        block: {action: _state_value(v) for action, v in actions.items()}
        for block, actions in values.items()
    }
    if blocks is None:
        blocks = [
            {
                "type": "input",
                "block_id": block,
                "label": {"type": "plain_text", "text": block},
                "optional": False,
                "element": {"type": entry["type"], "action_id": action},
            }
            for block, actions in state.items()
            for action, entry in actions.items()
        ]
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "token": verification_token,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": blocks,
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": state},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "title": {"type": "plain_text", "text": title, "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": api_app_id,
            "external_id": "",
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": response_urls or [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return _deep_merge(payload, extra)


def view_submission(
    *, secret: str, signing: Signing | None = None, **fields: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed ``view_submission`` request; ``fields`` are :func:`view_submission_payload`'s."""
    return signed(payload_body(view_submission_payload(**fields)), secret, **(signing or {}))


def slash_command_fields(
    *,
    text: str = "",
    command: str = "/countersign",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    response_url: str = "https://hooks.slack.com/commands/T0COUNTER/1/fake",
    trigger_id: str | None = None,
    api_app_id: str = APP_ID,
    verification_token: str = VERIFICATION_TOKEN,
) -> dict[str, str]:
    """The form fields of a slash command, in the order Slack sends them."""
    return {
        "token": verification_token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }


def slash_command(
    *, secret: str, signing: Signing | None = None, **fields: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed slash command request; ``fields`` are :func:`slash_command_fields`'s."""
    return signed(form_body(slash_command_fields(**fields)), secret, **(signing or {}))
