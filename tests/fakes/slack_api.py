"""A fake of the Slack Web API: a real aiohttp server on 127.0.0.1, in process.

    async with FakeSlack(token="xoxb-test") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        await client.chat_postMessage(channel="#approvals", text="hi")
        assert slack.calls_to("chat.postMessage")[0].args["text"] == "hi"

It answers like Slack: HTTP 200 with ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``; HTTP 429 with ``Retry-After`` when rate
limited. It reads the token from ``Authorization: Bearer`` or from a form
field (Slack ignores one in a JSON body or the query string, and so does the
fake), and arguments from the query string, a form body or a JSON body, the
way slack_sdk sends them.

Block Kit and message limits are enforced the way Slack rejects them (see
``BLOCK_RULES`` / ``ELEMENT_RULES`` / ``VIEW_RULES``): ``invalid_blocks`` for
messages, ``invalid_arguments`` for views, each with
``response_metadata.messages`` such as
``[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]``.

It also keeps what a test wants to assert on: every call (``calls``), every
message with its history (``messages``), ephemeral messages, opened views and
response_url posts; and it takes faults (``rate_limit``, ``fail``, ``hang``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo

from aiohttp import web

from .slack_requests import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_CHANNEL_NAME,
    TEAM_DOMAIN,
    TEAM_ID,
)

JSON = dict[str, Any]

# Arguments that are JSON structures (sent as JSON strings in form bodies).
STRUCTURED_ARGS = ("blocks", "attachments", "view", "metadata")

# --------------------------------------------------------------------------- limits

MESSAGE_TEXT_MAX = 40_000  # chat.* `text`; beyond it Slack refuses or truncates
MESSAGE_BLOCKS_MAX = 50
VIEW_BLOCKS_MAX = 100


@dataclass(frozen=True)
class Rule:
    """One limit on a field, addressed by a slash path relative to the object.

    ``*`` in the path stands for every item of a list. ``kind`` is what is
    measured: ``chars`` (string length; ``min`` too), ``items`` (list length),
    ``number`` (a numeric value), ``plain`` (a text object must be
    ``plain_text``).
    """

    path: str
    max: int = 0
    kind: Literal["chars", "items", "number", "plain"] = "chars"
    min: int = 0


def chars(path: str, most: int, *, least: int = 0) -> Rule:
    return Rule(path, most, "chars", least)


def items(path: str, most: int) -> Rule:
    return Rule(path, most, "items")


def number(path: str, most: int) -> Rule:
    return Rule(path, most, "number")


def plain(path: str) -> Rule:
    return Rule(path, kind="plain")


# Per block type ("*": every block). From the Block Kit reference.
BLOCK_RULES: dict[str, tuple[Rule, ...]] = {
    "*": (chars("block_id", 255),),
    "section": (
        chars("text/text", 3000, least=1),
        items("fields", 10),
        chars("fields/*/text", 2000, least=1),
    ),
    "header": (plain("text"), chars("text/text", 150, least=1)),
    "context": (items("elements", 10),),
    "actions": (items("elements", 25),),
    "input": (
        plain("label"),
        chars("label/text", 2000, least=1),
        plain("hint"),
        chars("hint/text", 2000),
    ),
    "image": (chars("image_url", 3000), chars("alt_text", 2000), chars("title/text", 2000)),
}

# Per interactive element type ("*": every element with an action_id).
ELEMENT_RULES: dict[str, tuple[Rule, ...]] = {
    "*": (chars("action_id", 255),),
    "button": (
        plain("text"),
        chars("text/text", 75, least=1),
        chars("value", 2000),
        chars("url", 3000),
        chars("accessibility_label", 75),
    ),
    "plain_text_input": (
        chars("initial_value", 3000),
        number("max_length", 3000),
        number("min_length", 3000),
        plain("placeholder"),
        chars("placeholder/text", 150),
    ),
    "static_select": (items("options", 100), chars("placeholder/text", 150)),
    "overflow": (items("options", 5),),
}

# Where interactive elements sit inside each block type.
ELEMENT_SLOTS: dict[str, str] = {
    "section": "accessory",
    "actions": "elements/*",
    "input": "element",
}

# The modal view object itself (views.open).
VIEW_RULES: tuple[Rule, ...] = (
    plain("title"),
    chars("title/text", 24, least=1),
    plain("submit"),
    chars("submit/text", 24),
    plain("close"),
    chars("close/text", 24),
    chars("private_metadata", 3000),
    chars("callback_id", 255),
    chars("external_id", 255),
    items("blocks", VIEW_BLOCKS_MAX),
)


def _walk(obj: Any, path: list[str], pointer: str) -> Iterator[tuple[str, Any]]:
    """Every (json-pointer, value) that ``path`` reaches in ``obj``; absent fields yield nothing."""
    if not path:
        yield pointer, obj
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(obj, list):
            for index, item in enumerate(obj):
                yield from _walk(item, rest, f"{pointer}/{index}")
    elif isinstance(obj, dict) and head in obj and obj[head] is not None:
        yield from _walk(obj[head], rest, f"{pointer}/{head}")


def _check(rule: Rule, obj: Any, pointer: str) -> list[str]:
    """Slack-worded problems with ``obj`` (at ``pointer``) under ``rule``."""
    problems = []
    for where, value in _walk(obj, rule.path.split("/"), pointer):
        at = f"[json-pointer:{where}]"
        if rule.kind == "chars":
            if not isinstance(value, str):
                problems.append(f"must be a string {at}")
            elif len(value) > rule.max:
                problems.append(f"must be less than {rule.max + 1} characters {at}")
            elif len(value) < rule.min:
                problems.append(f"must be more than {rule.min - 1} characters {at}")
        elif rule.kind == "items":
            if not isinstance(value, list):
                problems.append(f"must be an array {at}")
            elif len(value) > rule.max:
                problems.append(f"no more than {rule.max} items allowed {at}")
        elif rule.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"must be a number {at}")
            elif value > rule.max:
                problems.append(f"must be less than or equal to {rule.max} {at}")
        elif rule.kind == "plain" and (
            not isinstance(value, dict) or value.get("type") != "plain_text"
        ):
            problems.append(f'must be a "plain_text" text object {at}')
    return problems


def _apply(rules: Iterable[Rule], obj: Any, pointer: str) -> list[str]:
    return [problem for rule in rules for problem in _check(rule, obj, pointer)]


def validate_blocks(
    blocks: Any, pointer: str = "/blocks", most: int = MESSAGE_BLOCKS_MAX
) -> list[str]:
    """Problems with a ``blocks`` array, worded and addressed as Slack does (empty: valid)."""
    if not isinstance(blocks, list):
        return [f"must be an array [json-pointer:{pointer}]"]
    problems = []
    if len(blocks) > most:
        problems.append(f"no more than {most} items allowed [json-pointer:{pointer}]")
    block_ids: dict[str, int] = {}
    for index, block in enumerate(blocks):
        here = f"{pointer}/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"missing required field: type [json-pointer:{here}]")
            continue
        kind = block["type"]
        problems += _apply(BLOCK_RULES["*"] + BLOCK_RULES.get(kind, ()), block, here)
        if kind == "section" and "text" not in block and "fields" not in block:
            problems.append(f"must provide either text or fields [json-pointer:{here}]")
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                problems.append(
                    f"duplicate block_id {block_id!r}, first at {pointer}/{block_ids[block_id]}"
                    f" [json-pointer:{here}/block_id]"
                )
            block_ids.setdefault(block_id, index)
        action_ids: set[str] = set()
        slot = ELEMENT_SLOTS.get(kind)
        for where, element in _walk(block, slot.split("/"), here) if slot else ():
            if not isinstance(element, dict):
                continue
            rules = ELEMENT_RULES["*"] + ELEMENT_RULES.get(str(element.get("type")), ())
            problems += _apply(rules, element, where)
            action_id = element.get("action_id")
            if isinstance(action_id, str):
                if action_id in action_ids:
                    problems.append(
                        f"duplicate action_id {action_id!r} in one block"
                        f" [json-pointer:{where}/action_id]"
                    )
                action_ids.add(action_id)
    return problems


def validate_view(view: Any) -> list[str]:
    """Problems with a modal view object (views.open), Slack-worded, under ``/view``."""
    if not isinstance(view, dict):
        return ["must be an object [json-pointer:/view]"]
    problems = []
    if view.get("type") != "modal":
        problems.append('must be "modal" [json-pointer:/view/type]')
    if "title" not in view:
        problems.append("missing required field: title [json-pointer:/view]")
    if "blocks" not in view:
        problems.append("missing required field: blocks [json-pointer:/view]")
    problems += _apply(VIEW_RULES, view, "/view")
    blocks = view.get("blocks", [])
    problems += validate_blocks(blocks, "/view/blocks", most=VIEW_BLOCKS_MAX)
    has_input = isinstance(blocks, list) and any(
        isinstance(b, dict) and b.get("type") == "input" for b in blocks
    )
    if has_input and "submit" not in view:
        problems.append("submit is required when an input block is present [json-pointer:/view]")
    # The blocks-count problem is reported once (by VIEW_RULES).
    return list(dict.fromkeys(problems))


# --------------------------------------------------------------------------- records


@dataclass
class Call:
    """One request to the fake as it arrived; ``status``/``response`` are set once answered."""

    method: str
    args: JSON
    at: float  # time.monotonic() on arrival
    token: str | None = None
    http_method: str = "POST"
    status: int | None = None
    response: JSON | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.response is None else self.response.get("error")

    def __repr__(self) -> str:  # short: assertion messages list many calls
        outcome = "pending" if self.status is None else f"{self.status} {self.error or 'ok'}"
        return f"Call({self.method} → {outcome}, args={sorted(self.args)})"


@dataclass(frozen=True)
class MessageState:
    """What a message showed from ``at`` on, and which call put it there."""

    text: str
    blocks: list[JSON]
    at: float
    via: str


@dataclass
class Message:
    """A message as the fake workspace holds it now; ``history[0]`` is as posted."""

    channel: str
    ts: str
    text: str
    blocks: list[JSON]
    user: str
    thread_ts: str | None = None
    metadata: JSON | None = None
    deleted: bool = False
    history: list[MessageState] = field(default_factory=list)
    bot_id: str | None = BOT_ID  # None: a person's message
    app_id: str | None = APP_ID

    @property
    def updates(self) -> list[MessageState]:
        """Every state after the first (chat.update, response_url replacements)."""
        return self.history[1:]

    def as_payload(self) -> JSON:
        """The message as Slack shows it inside a ``block_actions`` payload."""
        shown: JSON = {
            "type": "message",
            "subtype": "bot_message",
            "text": self.text,
            "ts": self.ts,
            "user": self.user,
            "team": TEAM_ID,
            "blocks": self.blocks,
        }
        if self.bot_id is not None:
            shown["bot_id"] = self.bot_id
        if self.app_id is not None:
            shown["app_id"] = self.app_id
        if self.thread_ts:
            shown["thread_ts"] = self.thread_ts
        return shown


@dataclass(frozen=True)
class Ephemeral:
    """A chat.postEphemeral (or an ephemeral response_url post) shown to ``user`` only."""

    channel: str
    user: str | None
    text: str
    blocks: list[JSON]
    message_ts: str
    thread_ts: str | None
    at: float


@dataclass(frozen=True)
class ResponsePost:
    """One POST to a response_url, and what the fake did with it."""

    url: str
    body: JSON
    at: float
    status: int
    channel: str | None
    message_ts: str | None

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type") or "ephemeral")


@dataclass
class User:
    id: str
    email: str | None
    name: str
    real_name: str
    tz: str = "Europe/Berlin"
    is_bot: bool = False
    deleted: bool = False

    def as_json(self) -> JSON:
        zone = ZoneInfo(self.tz)
        now = datetime.now(zone)
        offset = now.utcoffset()
        profile: JSON = {
            "real_name": self.real_name,
            "display_name": self.name,
            "real_name_normalized": self.real_name,
            "display_name_normalized": self.name,
            "team": TEAM_ID,
        }
        if self.email is not None:
            profile["email"] = self.email
        if self.is_bot:
            profile["bot_id"] = BOT_ID
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": now.tzname(),
            "tz_offset": int(offset.total_seconds()) if offset else 0,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
        }


@dataclass
class Channel:
    id: str
    name: str
    is_member: bool = True  # the bot; posting elsewhere is `not_in_channel`
    is_private: bool = False


@dataclass
class _Fault:
    kind: Literal["rate_limit", "fail", "hang"]
    times: int
    retry_after: int = 1
    status: int = 500
    error: str = "fatal_error"
    seconds: float = 0.0


def _int_arg(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _cursor_offset(cursor: Any) -> int:
    """Where a page starts; a cursor we did not issue is ``invalid_cursor``."""
    if not cursor:
        return 0
    try:
        kind, _, offset = base64.b64decode(str(cursor)).decode().partition(":")
        if kind == "offset":
            return int(offset)
    except ValueError:
        pass
    raise ApiError("invalid_cursor")


class ApiError(Exception):
    """Raised inside a handler: answer ``{"ok": false, "error": ...}`` (plus extras)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _invalid(error: str, problems: list[str]) -> ApiError:
    return ApiError(
        error,
        errors=problems,
        response_metadata={"messages": [f"[ERROR] {p}" for p in problems]},
    )


Handler = Callable[[JSON], Awaitable[JSON]]


# --------------------------------------------------------------------------- the fake


class FakeSlack:
    """The fake Slack Web API. Use as ``async with FakeSlack() as slack``.

    ``long_text``: what happens to a message ``text`` over 40,000 characters.
    ``"reject"`` (default) answers ``msg_too_long``; ``"truncate"`` does what
    Slack's changelog describes for chat.postMessage: posts the first 40,000
    characters and warns ``message_truncated``.
    """

    RESPONSE_URL_USES = 5  # Slack: a response_url takes "up to five" posts (in 30 minutes)

    def __init__(
        self,
        token: str | Iterable[str] = "xoxb-test",
        *,
        long_text: Literal["reject", "truncate"] = "reject",
        first_ts: str = "1700000000.000100",
    ) -> None:
        self.tokens = {token} if isinstance(token, str) else set(token)
        self.long_text = long_text
        self.team_id = TEAM_ID
        self.bot_user_id = BOT_USER_ID
        self.bot_id = BOT_ID

        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, JSON] = {}
        self.responses: list[ResponsePost] = []
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.dms: dict[str, str] = {}  # user id -> D... channel id

        seconds, _, micros = first_ts.partition(".")
        self._ts_micros = itertools.count(int(seconds) * 1_000_000 + int(micros.ljust(6, "0")), 100)
        self._ids = itertools.count(1)
        self._used_triggers: set[str] = set()
        self._response_urls: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._response_uses: dict[str, int] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._changed: asyncio.Condition | None = None
        self._closing: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""  # http://127.0.0.1:<port>, once started

        self._handlers: dict[str, Handler] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.list": self._conversations_list,
        }

        self.add_user(BOT_USER_ID, None, name="countersign", real_name="Countersign", is_bot=True)
        self.add_user("U0ALICE", "alice@example.com", name="alice", real_name="Alice Approver")
        self.add_user("U0BOB", "bob@example.com", name="bob", real_name="Bob Builder")
        self.add_channel(DEFAULT_CHANNEL_ID, DEFAULT_CHANNEL_NAME)
        self.add_channel("C0GENERAL", "general")

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        """Base URL for ``AsyncWebClient(base_url=...)`` / ``SLACK_API_URL``; ends in ``/api/``."""
        return f"{self.url}/api/"

    async def start(self) -> Self:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._serve_api)
        app.router.add_post("/response/{rid}", self._serve_response_url)
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()  # hung requests are answered now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ directory

    def add_user(
        self,
        user_id: str,
        email: str | None,
        name: str | None = None,
        *,
        real_name: str | None = None,
        tz: str = "Europe/Berlin",
        is_bot: bool = False,
    ) -> User:
        """Add (or replace) a workspace member; ``users.info``/``lookupByEmail`` find them."""
        ZoneInfo(tz)  # an unknown zone fails here, not in the middle of a test
        handle = name or (email.split("@")[0] if email else user_id.lower())
        user = User(user_id, email, handle, real_name or handle, tz, is_bot)
        self.users[user_id] = user
        return user

    def add_channel(
        self, channel_id: str, name: str, *, is_member: bool = True, is_private: bool = False
    ) -> Channel:
        """Add (or replace) a channel; ``is_member=False``: the bot is not in it."""
        channel = Channel(channel_id, name.removeprefix("#"), is_member, is_private)
        self.channels[channel_id] = channel
        return channel

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        bot_id: str | None = None,
        app_id: str | None = None,
        metadata: JSON | None = None,
    ) -> Message:
        """A top-level message someone else posted (a person, or another app's bot)."""
        message = self._store(channel, text, [], None, "test")
        message.user, message.bot_id, message.app_id = user, bot_id, app_id
        message.metadata = metadata
        return message

    def dm_channel(self, user_id: str) -> str:
        """The bot's DM channel with ``user_id`` (``D...``), stable per user."""
        if user_id not in self.dms:
            self.dms[user_id] = f"D0{user_id.removeprefix('U').removeprefix('W')}"
        return self.dms[user_id]

    # ------------------------------------------------------------------ faults

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` get HTTP 429, ``Retry-After``, ``ratelimited``.

        ``method`` is a Web API method name, or ``"response_url"`` for posts to
        response URLs (so for ``fail`` and ``hang`` too).
        """
        self._add_fault(method, _Fault("rate_limit", times, retry_after=retry_after))

    def fail(
        self, method: str, status: int = 500, times: int = 1, error: str = "fatal_error"
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` with ``{"ok": false, error}``.

        ``status=200`` with an ``error`` such as ``"expired_trigger_id"`` makes a
        business error; 500/503 make server errors.
        """
        self._add_fault(method, _Fault("fail", times, status=status, error=error))

    def hang(self, method: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer only after ``seconds``."""
        self._add_fault(method, _Fault("hang", times, seconds=seconds))

    def _add_fault(self, method: str, fault: _Fault) -> None:
        if fault.times > 0:
            self._faults.setdefault(method, deque()).append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        return fault

    # ------------------------------------------------------------------ queries

    def calls_to(self, method: str) -> list[Call]:
        """The calls of one method, in arrival order."""
        return [call for call in self.calls if call.method == method]

    def messages_in(self, channel: str) -> list[Message]:
        """The (not deleted) messages of a channel, oldest first."""
        found = [m for (c, _), m in self.messages.items() if c == channel and not m.deleted]
        return sorted(found, key=lambda m: m.ts)

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        """The replies in one thread, oldest first."""
        return [
            m for m in self.messages_in(channel) if m.thread_ts == thread_ts and m.ts != thread_ts
        ]

    async def wait_for(
        self,
        predicate: str | Callable[[Call], bool],
        timeout: float = 5,  # noqa: ASYNC109 (callers give each wait its own deadline)
        *,
        answered: bool = True,
        since: int = 0,
    ) -> Call:
        """The first call that satisfies ``predicate`` (a method name or a test).

        Only answered calls count, unless ``answered=False`` (then a call counts
        from its arrival: a hung one, say); and only ``calls[since:]`` (pass
        ``len(slack.calls)`` taken before an action to wait for a new call).
        Returns at once when one is already recorded, else waits for more.
        Raises ``TimeoutError``, listing what did arrive, after ``timeout`` seconds.
        """
        test: Callable[[Call], bool] = (
            (lambda call: call.method == predicate) if isinstance(predicate, str) else predicate
        )

        def found() -> Call | None:
            ready = (c for c in self.calls[since:] if c.status is not None or not answered)
            return next((c for c in ready if test(c)), None)

        assert self._changed is not None, "FakeSlack is not started"
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while (call := found()) is None:
                        await self._changed.wait()
                    return call
            except TimeoutError:
                seen = ", ".join(repr(c) for c in self.calls) or "nothing"
                raise TimeoutError(
                    f"no matching Slack call within {timeout}s; saw: {seen}"
                ) from None

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # ------------------------------------------------------------------ HTTP: Web API

    async def _serve_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args, token = await self._read_args(request)
        call = Call(method, args, time.monotonic(), token, request.method)
        self.calls.append(call)
        await self._notify()
        try:
            status, body, headers = await self._answer(method, args, token)
        except ApiError as problem:
            status, body, headers = 200, {"ok": False, "error": problem.error, **problem.extra}, {}
        except Exception as bug:  # a bug in the fake: answer, and let the test see it
            status, body, headers = 500, {"ok": False, "error": f"fake_slack_bug: {bug!r}"}, {}
        call.status, call.response = status, body
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    async def _read_args(self, request: web.Request) -> tuple[JSON, str | None]:
        """Arguments (query, then body) and the token, read where Slack reads it.

        Slack takes the token from ``Authorization: Bearer`` or a form field;
        not from a JSON body, and (for apps made since 2021) not from the
        query string. A token found there is dropped, as Slack ignores it.
        """
        args: JSON = {k: v for k, v in request.query.items() if k != "token"}
        token: str | None = None
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = {}
                if isinstance(body, dict):
                    args.update({k: v for k, v in body.items() if k != "token"})
            else:
                form = await request.post()
                form_token = form.get("token")
                token = form_token if isinstance(form_token, str) else None
                args.update({k: v for k, v in form.items() if isinstance(v, str) and k != "token"})
        for name in STRUCTURED_ARGS:  # form bodies carry these as JSON strings
            if isinstance(args.get(name), str):
                with contextlib.suppress(ValueError):
                    args[name] = json.loads(args[name])
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()
        return args, token

    async def _answer(
        self, method: str, args: JSON, token: str | None
    ) -> tuple[int, JSON, dict[str, str]]:
        fault = self._take_fault(method)
        if fault is not None and fault.kind == "rate_limit":
            headers = {"Retry-After": str(fault.retry_after)}
            return 429, {"ok": False, "error": "ratelimited"}, headers
        if fault is not None and fault.kind == "fail":
            return fault.status, {"ok": False, "error": fault.error}, {}
        if fault is not None and fault.kind == "hang":
            await self._sleep(fault.seconds)
        handler = self._handlers.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if method != "api.test":
            if not token:
                raise ApiError("not_authed")
            if token not in self.tokens:
                raise ApiError("invalid_auth")
        return 200, {"ok": True, **await handler(args)}, {}

    async def _sleep(self, seconds: float) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # ------------------------------------------------------------------ helpers

    def _next_ts(self) -> str:
        micros = next(self._ts_micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _resolve_channel(self, given: Any, *, by_name: bool = True) -> str:
        """A channel id from an id, ``#name``, or a user id (the bot's DM with them)."""
        if not isinstance(given, str) or not given:
            raise ApiError("channel_not_found")
        channel: str = given
        if channel.startswith("#"):
            if not by_name:
                raise ApiError("channel_not_found")
            name = channel[1:]
            match = next((c for c in self.channels.values() if c.name == name), None)
            if match is None:
                raise ApiError("channel_not_found")
            channel = match.id
        if channel in self.channels:
            if not self.channels[channel].is_member:
                raise ApiError("not_in_channel")
            return channel
        if channel in self.dms.values():
            return channel
        if by_name and channel in self.users:
            return self.dm_channel(channel)
        raise ApiError("channel_not_found")

    @staticmethod
    def _json_arg(args: JSON, name: str, error: str) -> Any:
        """A structured argument, given as JSON (a JSON body) or a JSON string (a form)."""
        value = args.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ApiError(error) from None
        return value

    def _content(self, args: JSON, *, required: bool = True) -> tuple[str, list[JSON], list[str]]:
        """Validated ``text`` and ``blocks`` of a message; also Slack's warnings."""
        blocks = copy.deepcopy(self._json_arg(args, "blocks", "invalid_blocks_format"))
        if blocks is not None and not isinstance(blocks, list):
            raise ApiError("invalid_blocks_format")
        text = args.get("text")
        text = "" if text is None else str(text)
        attachments = self._json_arg(args, "attachments", "invalid_attachments")
        if required and not text and not blocks and not attachments:
            raise ApiError("no_text")
        warnings = []
        if len(text) > MESSAGE_TEXT_MAX:
            if self.long_text == "reject":
                raise ApiError("msg_too_long")
            text = text[:MESSAGE_TEXT_MAX]
            warnings.append("message_truncated")
        if blocks:
            problems = validate_blocks(blocks)
            if problems:
                raise _invalid("invalid_blocks", problems)
            for block in blocks:  # Slack fills in the block_ids a message leaves out
                if isinstance(block, dict) and "block_id" not in block:
                    block["block_id"] = secrets.token_urlsafe(3)
        return text, blocks or [], warnings

    def _store(
        self, channel: str, text: str, blocks: list[JSON], thread_ts: str | None, via: str
    ) -> Message:
        ts = self._next_ts()
        message = Message(channel, ts, text, blocks, self.bot_user_id, thread_ts)
        message.history.append(MessageState(text, blocks, time.monotonic(), via))
        self.messages[(channel, ts)] = message
        return message

    @staticmethod
    def _replace(message: Message, text: str, blocks: list[JSON], via: str) -> None:
        message.text, message.blocks = text, blocks
        message.history.append(MessageState(text, blocks, time.monotonic(), via))

    def _message_json(self, message: Message) -> JSON:
        shown = message.as_payload()
        del shown["subtype"]
        return shown

    # ------------------------------------------------------------------ methods

    async def _api_test(self, args: JSON) -> JSON:
        return {"args": args} if args else {}

    async def _auth_test(self, args: JSON) -> JSON:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Countersign Test",
            "user": self.users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _chat_post_message(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"))
        text, blocks, warnings = self._content(args)
        thread_ts = args.get("thread_ts") or None
        metadata = self._metadata(args)
        message = self._store(channel, text, blocks, thread_ts, "chat.postMessage")
        message.metadata = metadata
        answer: JSON = {
            "channel": channel,
            "ts": message.ts,
            "message": self._message_json(message),
        }
        if warnings:
            answer["warning"] = ",".join(warnings)
            answer["response_metadata"] = {"warnings": warnings}
        return answer

    def _metadata(self, args: JSON) -> JSON | None:
        """Message metadata: an ``event_type`` string and an ``event_payload`` object."""
        metadata = self._json_arg(args, "metadata", "invalid_metadata_format")
        if metadata is None:
            return None
        if not isinstance(metadata, dict):
            raise ApiError("invalid_metadata_format")
        if not isinstance(metadata.get("event_type"), str) or not isinstance(
            metadata.get("event_payload"), dict
        ):
            raise ApiError("invalid_metadata_schema")
        return copy.deepcopy(metadata)

    async def _chat_update(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"), by_name=False)
        message = self.messages.get((channel, str(args.get("ts"))))
        if message is None or message.deleted:
            raise ApiError("message_not_found")
        has_blocks = args.get("blocks") is not None
        text, blocks, _ = self._content(args, required=False)
        if not text and not has_blocks and args.get("attachments") is None:
            raise ApiError("no_text")
        # Left out, `text` / `blocks` keep their previous value (as Slack keeps attachments).
        new_text = text if args.get("text") is not None else message.text
        new_blocks = blocks if has_blocks else message.blocks
        self._replace(message, new_text, new_blocks, "chat.update")
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_json(message),
        }

    async def _chat_post_ephemeral(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"))
        user = args.get("user")
        if not user or user not in self.users:
            raise ApiError("user_not_found")
        text, blocks, _ = self._content(args)
        message_ts = self._next_ts()
        self.ephemerals.append(
            Ephemeral(
                channel, user, text, blocks, message_ts, args.get("thread_ts"), time.monotonic()
            )
        )
        return {"message_ts": message_ts}

    async def _views_open(self, args: JSON) -> JSON:
        trigger_id = args.get("trigger_id")
        if not trigger_id:
            raise _invalid("invalid_arguments", ["missing required field: trigger_id"])
        view = self._json_arg(args, "view", "invalid_arguments")
        if view is None:
            raise _invalid("invalid_arguments", ["missing required field: view"])
        problems = validate_view(view)
        if problems:
            raise _invalid("invalid_arguments", problems)
        if trigger_id in self._used_triggers:
            raise ApiError("exchanged_trigger_id")
        self._used_triggers.add(trigger_id)
        view_id = f"V{next(self._ids):08d}"
        opened = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": view["title"],
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view["blocks"],
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = opened
        return {"view": opened}

    async def _users_info(self, args: JSON) -> JSON:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user.as_json()}

    async def _users_lookup_by_email(self, args: JSON) -> JSON:
        email = str(args.get("email", "")).strip().lower()
        user = next(
            (u for u in self.users.values() if u.email and u.email.lower() == email and email),
            None,
        )
        if user is None:
            raise ApiError("users_not_found")
        return {"user": user.as_json()}

    async def _conversations_open(self, args: JSON) -> JSON:
        if args.get("channel"):
            return {"channel": {"id": self._resolve_channel(args["channel"], by_name=False)}}
        wanted = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        if not wanted:
            raise ApiError("users_list_not_supplied")
        for user_id in wanted:
            if user_id not in self.users:
                raise ApiError("user_not_found")
        if len(wanted) > 1:
            raise ApiError("not_supported", detail="the fake opens one-to-one DMs only")
        return {"channel": {"id": self.dm_channel(wanted[0])}, "no_op": False}

    async def _conversations_history(self, args: JSON) -> JSON:
        """Top-level messages of a conversation the bot is in, newest first, paged.

        Takes an id only (no ``#name``); ``oldest`` / ``latest`` / ``inclusive``,
        ``limit`` (default 100, at most 999) and ``cursor`` as Slack does; message
        metadata only with ``include_all_metadata``.
        """
        channel = self._resolve_channel(args.get("channel"), by_name=False)
        limit = _int_arg(args.get("limit"), 100)
        if limit < 1:
            limit = 100
        limit = min(limit, 999)
        inclusive = _flag(args.get("inclusive"))
        oldest = float(args.get("oldest") or 0)
        latest = float(args["latest"]) if args.get("latest") else float("inf")

        def within(ts: float) -> bool:
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest if args.get("oldest") else ts < latest

        found = [
            m
            for m in reversed(self.messages_in(channel))
            if not m.deleted
            and (m.thread_ts is None or m.thread_ts == m.ts)
            and within(float(m.ts))
        ]
        start = _cursor_offset(args.get("cursor"))
        page = found[start : start + limit]
        with_metadata = _flag(args.get("include_all_metadata"))
        shown = []
        for message in page:
            item = self._message_json(message)
            if with_metadata and message.metadata is not None:
                item["metadata"] = copy.deepcopy(message.metadata)
            shown.append(item)
        more = start + limit < len(found)
        return {
            "messages": shown,
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
        }

    async def _conversations_list(self, args: JSON) -> JSON:
        """Channels of the workspace (public ones by default), paged (``limit`` ≤ 1000)."""
        types = {t.strip() for t in str(args.get("types") or "public_channel").split(",")}
        limit = min(max(_int_arg(args.get("limit"), 100), 1), 1000)
        listed = [
            c
            for c in self.channels.values()
            if ("private_channel" if c.is_private else "public_channel") in types
        ]
        start = _cursor_offset(args.get("cursor"))
        page = listed[start : start + limit]
        more = start + limit < len(listed)
        return {
            "channels": [
                {
                    "id": c.id,
                    "name": c.name,
                    "is_channel": True,
                    "is_private": c.is_private,
                    "is_member": c.is_member,
                    "is_archived": False,
                }
                for c in page
            ],
            "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
        }

    # ------------------------------------------------------------------ response_url

    def new_response_url(
        self, channel: str | None = None, message_ts: str | None = None, user: str | None = None
    ) -> str:
        """A response_url on the fake, as Slack puts in an interaction payload.

        Tie it to the message the interaction came from (``channel``,
        ``message_ts``) and ``replace_original`` / ``delete_original`` act on
        that stored message; ``response_type: in_channel`` posts a new message
        in ``channel``; otherwise the post is recorded as an ephemeral for ``user``.
        """
        rid = secrets.token_urlsafe(12)
        self._response_urls[rid] = (channel, message_ts, user)
        return f"{self.url}/response/{rid}"

    async def _serve_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        call = Call("response_url", body if isinstance(body, dict) else {}, time.monotonic())
        self.calls.append(call)
        await self._notify()
        status, text = await self._answer_response_url(rid, body)
        call.status = status
        call.response = {"ok": True} if status == 200 else {"ok": False, "error": text}
        channel, message_ts, _ = self._response_urls.get(rid, (None, None, None))
        self.responses.append(
            ResponsePost(
                f"{self.url}/response/{rid}",
                body if isinstance(body, dict) else {},
                call.at,
                status,
                channel,
                message_ts,
            )
        )
        await self._notify()
        return web.Response(status=status, text=text, content_type="text/plain")

    async def _answer_response_url(self, rid: str, body: Any) -> tuple[int, str]:
        """Status and plain-text body. Slack documents the five-use limit but not the
        wording of every refusal; ``no_active_hooks`` / ``used_url`` are the fake's."""
        fault = self._take_fault("response_url")
        if fault is not None and fault.kind == "rate_limit":
            return 429, "rate_limited"
        if fault is not None and fault.kind == "fail":
            return fault.status, fault.error
        if fault is not None and fault.kind == "hang":
            await self._sleep(fault.seconds)
        if rid not in self._response_urls:
            return 404, "no_active_hooks"
        self._response_uses[rid] = self._response_uses.get(rid, 0) + 1
        if self._response_uses[rid] > self.RESPONSE_URL_USES:
            return 404, "used_url"
        if not isinstance(body, dict):
            return 400, "invalid_payload"
        channel, message_ts, user = self._response_urls[rid]
        original = self.messages.get((channel, message_ts)) if channel and message_ts else None
        try:
            if body.get("delete_original"):
                if original is None:
                    return 404, "message_not_found"
                original.deleted = True
                return 200, "ok"
            text, blocks, _ = self._content(body)
        except ApiError as problem:
            return 400, problem.error
        if body.get("replace_original"):
            if original is None:
                return 404, "message_not_found"
            self._replace(original, text, blocks, "response_url")
        elif body.get("response_type") == "in_channel":
            if channel is None:
                return 404, "channel_not_found"
            self._store(channel, text, blocks, body.get("thread_ts"), "response_url")
        else:
            self.ephemerals.append(
                Ephemeral(
                    channel or "",
                    user,
                    text,
                    blocks,
                    self._next_ts(),
                    body.get("thread_ts"),
                    time.monotonic(),
                )
            )
        return 200, "ok"
