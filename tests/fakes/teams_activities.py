"""Inbound Microsoft Teams activities, shaped the way Teams posts them to a bot.

Every builder returns the JSON body of one ``POST /api/messages`` from the Bot
Framework Connector: ``channelId: "msteams"``, the ``serviceUrl`` to answer
on, ``from`` (``29:`` user id, ``aadObjectId``), ``recipient`` (the bot,
``28:<app id>``), ``conversation`` (``conversationType``, ``tenantId``),
``channelData`` (``tenant``; ``team`` / ``channel`` in a team), ``locale``,
``localTimezone`` and a ``clientInfo`` entity. Sign them with
``FakeBotFramework.sign_activity_token(activity["serviceUrl"])`` and send
them with ``headers(token)``.

Conversation ids follow Teams: ``a:...`` for a personal chat, ``19:...@thread.v2``
for a group chat, and for a channel ``19:...@thread.tacv2;messageid=<root>``,
where ``<root>`` is the id of the thread's first post (a new post is its own
root). Builders take the channel's base id as ``conversation_id`` and add the
``;messageid=`` part themselves.

Shapes follow Microsoft's Teams documentation (conversation basics, bot
events, Universal Actions ``adaptiveCard/action``) and captured payloads
published there.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

JSON = dict[str, Any]

CHANNEL_ID = "msteams"
BOT_NAME = "Countersign"
DEFAULT_TENANT_ID = "5b1b7f6e-3c2a-4d8e-9f10-2a6b4c8d0e12"
DEFAULT_SERVICE_URL = "https://smba.trafficmanager.net/teams/"
DEFAULT_LOCALE = "en-US"
DEFAULT_TIMEZONE = "Europe/London"
ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

ConversationType = Literal["personal", "channel", "groupChat"]

_last_id = [0]
_id_lock = threading.Lock()


def headers(token: str) -> dict[str, str]:
    """The HTTP headers the Connector sends with an activity."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json; charset=utf-8",
    }


def bot_account(app_id: str, name: str = BOT_NAME) -> JSON:
    """The bot as Teams names it in ``recipient`` and ``membersAdded``."""
    return {"id": f"28:{app_id}", "name": name}


def mention_entity(member_id: str, name: str) -> JSON:
    """A ``mention`` entity; the message text must contain ``<at>{name}</at>``."""
    return {
        "type": "mention",
        "text": f"<at>{name}</at>",
        "mentioned": {"id": member_id, "name": name},
    }


def new_activity_id() -> str:
    """A Teams message id: milliseconds since the epoch, as a string (unique here)."""
    with _id_lock:
        _last_id[0] = max(_last_id[0] + 1, int(time.time() * 1000))
        return str(_last_id[0])


def _invoke_id() -> str:
    return f"f:{secrets.randbelow(10**19):019d}"


def _timestamps(local_timezone: str) -> tuple[str, str]:
    now = datetime.now(UTC)
    try:
        from zoneinfo import ZoneInfo

        local = now.astimezone(ZoneInfo(local_timezone))
    except Exception:  # unknown zone name: keep UTC
        local = now
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    local_stamp = (
        local.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"0{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    )
    return stamp, local_stamp


def _client_info(locale: str, local_timezone: str) -> JSON:
    return {
        "type": "clientInfo",
        "locale": locale,
        "country": locale.rsplit("-", 1)[-1] if "-" in locale else "US",
        "platform": "Web",
        "timezone": local_timezone,
    }


def _base(
    activity_type: str,
    *,
    app_id: str,
    from_id: str,
    from_name: str | None,
    aad_object_id: str | None,
    conversation_id: str,
    conversation_type: ConversationType,
    tenant_id: str,
    service_url: str,
    team_id: str | None,
    team_name: str | None,
    thread_id: str | None,
    activity_id: str | None,
    locale: str,
    local_timezone: str,
    bot_name: str,
    channel_data: Mapping[str, Any] | None,
) -> JSON:
    activity_id = activity_id or new_activity_id()
    stamp, local_stamp = _timestamps(local_timezone)
    sender: JSON = {"id": from_id}
    if from_name is not None:
        sender["name"] = from_name
    if aad_object_id is not None:
        sender["aadObjectId"] = aad_object_id
    conversation: JSON = {"conversationType": conversation_type, "tenantId": tenant_id}
    data: JSON = {"tenant": {"id": tenant_id}}
    if conversation_type == "channel":
        base_id = conversation_id.split(";messageid=", 1)[0]
        root = thread_id or activity_id
        conversation["id"] = (
            f"{base_id};messageid={root}" if activity_type != "conversationUpdate" else base_id
        )
        conversation["isGroup"] = True
        team: JSON = {"id": team_id or base_id}
        if team_name is not None:
            team["name"] = team_name
        data.update(
            teamsChannelId=base_id,
            teamsTeamId=team["id"],
            channel={"id": base_id},
            team=team,
        )
    else:
        conversation["id"] = conversation_id
        if conversation_type == "groupChat":
            conversation["isGroup"] = True
    if channel_data:
        data.update(channel_data)
    return {
        "type": activity_type,
        "id": activity_id,
        "timestamp": stamp,
        "localTimestamp": local_stamp,
        "channelId": CHANNEL_ID,
        "serviceUrl": service_url,
        "from": sender,
        "conversation": conversation,
        "recipient": bot_account(app_id, bot_name),
        "entities": [_client_info(locale, local_timezone)],
        "channelData": data,
        "locale": locale,
        "localTimezone": local_timezone,
    }


def message(
    text: str,
    *,
    app_id: str,
    from_id: str,
    from_name: str | None = None,
    aad_object_id: str | None = None,
    conversation_id: str,
    conversation_type: ConversationType = "personal",
    tenant_id: str = DEFAULT_TENANT_ID,
    service_url: str = DEFAULT_SERVICE_URL,
    team_id: str | None = None,
    team_name: str | None = None,
    thread_id: str | None = None,
    mention_bot: bool | None = None,
    mentions: Iterable[tuple[str, str]] = (),
    activity_id: str | None = None,
    locale: str = DEFAULT_LOCALE,
    local_timezone: str = DEFAULT_TIMEZONE,
    bot_name: str = BOT_NAME,
    channel_data: Mapping[str, Any] | None = None,
) -> JSON:
    """A ``message`` a user typed.

    In a channel or group chat Teams only delivers messages that @mention the
    bot, so ``mention_bot`` defaults to ``True`` there: the text becomes
    ``<at>Countersign</at> {text}`` with a ``mention`` entity. ``mentions``
    adds other ``(member id, name)`` mentions (their ``<at>`` tags must be in
    ``text``). Teams also sends the text as an HTML attachment.
    """
    activity = _base(
        "message",
        app_id=app_id,
        from_id=from_id,
        from_name=from_name,
        aad_object_id=aad_object_id,
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        tenant_id=tenant_id,
        service_url=service_url,
        team_id=team_id,
        team_name=team_name,
        thread_id=thread_id,
        activity_id=activity_id,
        locale=locale,
        local_timezone=local_timezone,
        bot_name=bot_name,
        channel_data=channel_data,
    )
    if mention_bot is None:
        mention_bot = conversation_type != "personal"
    entities: list[JSON] = []
    if mention_bot:
        text = f"<at>{bot_name}</at> {text}"
        entities.append(mention_entity(f"28:{app_id}", bot_name))
    entities.extend(mention_entity(member_id, name) for member_id, name in mentions)
    activity["entities"] = entities + activity["entities"]
    activity["text"] = text
    activity["textFormat"] = "plain"
    activity["attachments"] = [{"contentType": "text/html", "content": f"<p>{text}</p>"}]
    return activity


def invoke_action(
    verb: str,
    data: Mapping[str, Any] | None = None,
    *,
    app_id: str,
    from_id: str,
    from_name: str | None = None,
    aad_object_id: str | None = None,
    reply_to_id: str,
    conversation_id: str,
    conversation_type: ConversationType = "personal",
    tenant_id: str = DEFAULT_TENANT_ID,
    service_url: str = DEFAULT_SERVICE_URL,
    team_id: str | None = None,
    team_name: str | None = None,
    thread_id: str | None = None,
    trigger: Literal["manual", "automatic"] = "manual",
    title: str | None = None,
    activity_id: str | None = None,
    locale: str = DEFAULT_LOCALE,
    local_timezone: str = DEFAULT_TIMEZONE,
    bot_name: str = BOT_NAME,
    channel_data: Mapping[str, Any] | None = None,
) -> JSON:
    """A click on an ``Action.Execute`` button: ``invoke`` / ``adaptiveCard/action``.

    ``reply_to_id`` is the id of the card's message (what ``update_activity``
    needs). In a channel ``thread_id`` is the thread's root post id (the card
    itself when it started the thread, the default).
    """
    activity = _base(
        "invoke",
        app_id=app_id,
        from_id=from_id,
        from_name=from_name,
        aad_object_id=aad_object_id,
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        tenant_id=tenant_id,
        service_url=service_url,
        team_id=team_id,
        team_name=team_name,
        thread_id=thread_id or reply_to_id,
        activity_id=activity_id or _invoke_id(),
        locale=locale,
        local_timezone=local_timezone,
        bot_name=bot_name,
        channel_data=channel_data,
    )
    action: JSON = {"type": "Action.Execute", "verb": verb, "data": dict(data or {})}
    if title is not None:
        action["title"] = title
    activity["name"] = "adaptiveCard/action"
    activity["replyToId"] = reply_to_id
    activity["value"] = {"action": action, "trigger": trigger}
    activity["channelData"].setdefault("source", {"name": "message"})
    activity["channelData"].setdefault("legacy", {"replyToId": reply_to_id})
    return activity


def installation_update(
    action: Literal["add", "remove"] = "add",
    *,
    app_id: str,
    from_id: str,
    from_name: str | None = None,
    aad_object_id: str | None = None,
    conversation_id: str,
    conversation_type: ConversationType = "personal",
    tenant_id: str = DEFAULT_TENANT_ID,
    service_url: str = DEFAULT_SERVICE_URL,
    team_id: str | None = None,
    team_name: str | None = None,
    activity_id: str | None = None,
    locale: str = DEFAULT_LOCALE,
    local_timezone: str = DEFAULT_TIMEZONE,
    bot_name: str = BOT_NAME,
    channel_data: Mapping[str, Any] | None = None,
) -> JSON:
    """The app was installed (``add``) or removed for a user, chat or team.

    For a team, ``conversation_id`` is the team's General channel (the team id).
    """
    activity = _base(
        "installationUpdate",
        app_id=app_id,
        from_id=from_id,
        from_name=from_name,
        aad_object_id=aad_object_id,
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        tenant_id=tenant_id,
        service_url=service_url,
        team_id=team_id,
        team_name=team_name,
        thread_id=None,
        activity_id=activity_id or _invoke_id(),
        locale=locale,
        local_timezone=local_timezone,
        bot_name=bot_name,
        channel_data=channel_data,
    )
    if conversation_type == "channel":
        base_id = conversation_id.split(";messageid=", 1)[0]
        activity["conversation"]["id"] = base_id
        activity["channelData"]["settings"] = {"selectedChannel": {"id": base_id}}
    activity["channelData"].setdefault("source", {"name": "message"})
    activity["action"] = action
    return activity


def conversation_update(
    members_added: Iterable[Mapping[str, Any]] | None = None,
    members_removed: Iterable[Mapping[str, Any]] | None = None,
    *,
    app_id: str,
    from_id: str,
    from_name: str | None = None,
    aad_object_id: str | None = None,
    conversation_id: str,
    conversation_type: ConversationType = "personal",
    tenant_id: str = DEFAULT_TENANT_ID,
    service_url: str = DEFAULT_SERVICE_URL,
    team_id: str | None = None,
    team_name: str | None = None,
    activity_id: str | None = None,
    locale: str = DEFAULT_LOCALE,
    local_timezone: str = DEFAULT_TIMEZONE,
    bot_name: str = BOT_NAME,
    channel_data: Mapping[str, Any] | None = None,
) -> JSON:
    """Members joined or left; by default the bot itself was added.

    In a team ``channelData.eventType`` is ``teamMemberAdded`` /
    ``teamMemberRemoved`` and ``channelData.team`` carries ``id`` and ``name``.
    """
    activity = _base(
        "conversationUpdate",
        app_id=app_id,
        from_id=from_id,
        from_name=from_name,
        aad_object_id=aad_object_id,
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        tenant_id=tenant_id,
        service_url=service_url,
        team_id=team_id,
        team_name=team_name,
        thread_id=None,
        activity_id=activity_id or _invoke_id(),
        locale=locale,
        local_timezone=local_timezone,
        bot_name=bot_name,
        channel_data=channel_data,
    )
    if members_added is None and members_removed is None:
        members_added = [{"id": f"28:{app_id}"}]
    if members_added is not None:
        activity["membersAdded"] = [dict(m) for m in members_added]
    if members_removed is not None:
        activity["membersRemoved"] = [dict(m) for m in members_removed]
    if conversation_type == "channel":
        event = "teamMemberAdded" if members_added is not None else "teamMemberRemoved"
        activity["channelData"].setdefault("eventType", event)
    return activity
