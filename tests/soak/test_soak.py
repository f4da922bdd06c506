"""Soak with faults: three replicas, Slack and Teams, many voters, while things break.

``.venv/bin/pytest tests/soak`` runs the short mode (about 20 s of load);
``SOAK_SECONDS=120 .venv/bin/pytest tests/soak -s`` runs a full one and prints
its figures. See docs/RELIABILITY.md.

While the load runs, faults are injected on a schedule: the fake Slack answers
429, 500 and hangs; the fake Bot Framework answers 429 and 500; the callback
receiver answers 500 and drops connections; one server is killed with SIGKILL
and restarted; every PostgreSQL connection of the soak database is terminated
three times. Then, within a deadline, the system must settle, and:

- every accepted request has one final status, the one its acknowledged votes
  and the rules give (quorum of 2 distinct people, one denial denies, expiry),
  and the stored votes replay to that same status;
- every acknowledged click is in the ledger (as a vote or a refused vote);
- exactly one decision per request in the ledger, and one callback (one
  delivery id) per decision, delivered and correctly signed;
- every card of every request, on both platforms, shows the final state with
  no buttons;
- ``countersign ledger verify`` exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from cards import slack as slack_cards
from cards import teams as teams_cards
from countersign.crypto import SecretBox
from countersign.policy import load_policy
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from tests.conftest import _raw_pg_dsn
from tests.fakes import slack_requests as slack_req
from tests.fakes import teams_activities as acts
from tests.fakes.slack_api import FakeSlack
from tests.fakes.teams_api import FakeBotFramework

from .harness import (
    APPROVERS,
    REQUESTER,
    SERVER_SECRET,
    SLACK_CHANNEL,
    SLACK_IDS,
    SLACK_SECRET,
    SLACK_TOKEN,
    TEAMS_APP_ID,
    TEAMS_APP_PASSWORD,
    TEAMS_IDS,
    TEAMS_TEAM,
    CallbackReceiver,
    Server,
    server_env,
    terminate_backends,
    write_policy,
)

pytestmark = [pytest.mark.postgres, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
REQUESTS_PER_SECOND = float(os.environ.get("SOAK_RATE", "1.5"))
SETTLE_SECONDS = float(os.environ.get("SOAK_SETTLE_SECONDS", "180"))
EXPIRE_TTL = 8  # seconds: the requests meant to expire
SEED = int(os.environ.get("SOAK_SEED", "7"))
REQUEST_ID = re.compile(r"req_[0-9A-Z]{26}")
FINAL_LABEL = {"approved": "Approved", "denied": "Denied", "expired": "Expired"}
SLACK_ACK_SECONDS = 3.0  # Slack gives up on an acknowledgement after 3 s


# --------------------------------------------------------------------------- records


@dataclass
class Attempt:
    """One vote a simulated person cast, and whether a server acknowledged it."""

    request_id: str
    email: str
    platform: str
    choice: str  # approve / deny
    acked: bool = False
    tries: int = 0
    answers: list[str] = field(default_factory=list)  # server: status / error, per try
    body: Any = None  # the signed Slack click, resent as is on a retry


@dataclass
class Planned:
    request_id: str
    scenario: str
    expires: bool
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class Figures:
    created_201: int = 0
    create_retries: int = 0
    create_failed: int = 0
    votes_sent: int = 0
    vote_retries: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the world


class Soak:
    """Everything the load generator and the checks need."""

    def __init__(
        self,
        servers: list[Server],
        slack: FakeSlack,
        bf: FakeBotFramework,
        channel: str,
        receiver: CallbackReceiver,
        token: str,
        http: aiohttp.ClientSession,
        rng: random.Random,
    ) -> None:
        self.servers = servers
        self.slack = slack
        self.bf = bf
        self.channel = channel
        self.receiver = receiver
        self.token = token
        self.http = http
        self.rng = rng
        self.figures = Figures()
        self.plans: list[Planned] = []
        self.slack_cards: dict[str, list[tuple[str, str]]] = {}  # request -> (channel, ts)
        self.teams_cards: dict[str, list[str]] = {}  # request -> activity ids
        self.looked_at: set[str] = set()  # Teams cards refreshed by look_at_teams_duplicates
        self._last_server = ""

    def server(self) -> Server:
        up = [s for s in self.servers if s.up] or self.servers
        return self.rng.choice(up)

    def log_fault(self, kind: str, detail: str = "") -> None:
        self.figures.faults[kind] += 1
        self.figures.fault_log.append(f"{time.monotonic():.1f} {kind} {detail}".strip())

    # -- card index ------------------------------------------------------------------

    def index_cards(self) -> None:
        """Top-level cards per request on both platforms (read from the fakes)."""
        slack: dict[str, list[tuple[str, str]]] = {}
        for (channel, ts), message in list(self.slack.messages.items()):
            if channel != SLACK_CHANNEL or message.thread_ts is not None or message.deleted:
                continue
            found = REQUEST_ID.search(json.dumps(message.blocks))
            if found:
                slack.setdefault(found.group(0), []).append((channel, ts))
        self.slack_cards = slack
        teams: dict[str, list[str]] = {}
        for activity in self.bf.activities(self.channel):
            if activity.card is None or activity.reply_to_id is not None:
                continue
            if activity.thread_id not in (None, activity.id):
                continue
            found = REQUEST_ID.search(json.dumps(activity.card))
            if found:
                teams.setdefault(found.group(0), []).append(activity.id)
        self.teams_cards = teams

    async def look_at_teams_duplicates(self) -> None:
        """An approver looks at the channel: Teams refreshes each request card in view.

        Only requests with more than one Teams card (a post whose answer was
        lost): the refresh is how a card that nothing tracks is found again.
        """
        viewer = TEAMS_IDS[APPROVERS[0]]
        for request_id, activity_ids in self.teams_cards.items():
            for activity_id in activity_ids if len(activity_ids) > 1 else ():
                if activity_id in self.looked_at:
                    continue
                activity = acts.invoke_action(
                    teams_cards.VERB_REFRESH,
                    {"request_id": request_id},
                    app_id=TEAMS_APP_ID,
                    reply_to_id=activity_id,
                    trigger="automatic",
                    **self.bf.sender_kwargs(viewer),
                    **self.bf.conversation_kwargs(self.channel),
                )
                token = self.bf.sign_activity_token(activity["serviceUrl"])
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self.http.post(
                        self.server().url + "/api/messages",
                        data=json.dumps(activity),
                        headers=acts.headers(token),
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        if resp.status == 200:
                            self.looked_at.add(activity_id)

    async def indexer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.index_cards()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def card_on(self, request_id: str, platform: str, within: float) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = (self.slack_cards if platform == "slack" else self.teams_cards).get(request_id)
            if found:
                return found[0]
            await asyncio.sleep(0.3)
        return None

    # -- requests --------------------------------------------------------------------

    async def create(self, index: int, expires: bool) -> str | None:
        body: dict[str, Any] = {
            "action": "deploy.service",
            "resource": f"prod/svc-{index}",
            "reason": f"soak request {index}",
            "requested_by": REQUESTER,
            "params": {"version": index, "replicas": 3},
            "callback_url": self.receiver.url,
        }
        if expires:
            body["ttl_seconds"] = EXPIRE_TTL
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": f"soak-{index}"}
        deadline = time.monotonic() + 60
        tries = 0
        while time.monotonic() < deadline:
            tries += 1
            if tries > 1:
                self.figures.create_retries += 1
            server = self.server()
            try:
                async with self.http.post(
                    server.url + "/v1/requests",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    if resp.status == 201:
                        self.figures.created_201 += 1
                        return str((await resp.json())["id"])
                    if resp.status == 200:  # a retry of one that was created: same request
                        return str((await resp.json())["id"])
                    assert resp.status >= 500, (resp.status, await resp.text())
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.3)
        self.figures.create_failed += 1
        return None

    # -- votes -----------------------------------------------------------------------

    async def vote(self, attempt: Attempt) -> None:
        """Cast one vote until a server acknowledges it (retrying as Slack / a person would)."""
        card = await self.card_on(attempt.request_id, attempt.platform, within=30)
        if card is None:  # no card on that platform yet: vote on the other one
            other = "teams" if attempt.platform == "slack" else "slack"
            card = await self.card_on(attempt.request_id, other, within=30)
            if card is not None:
                attempt.platform = other
        if card is None:
            return
        cast = self._slack_vote if attempt.platform == "slack" else self._teams_vote
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not attempt.acked:
            attempt.tries += 1
            self.figures.votes_sent += 1
            if attempt.tries > 1:
                self.figures.vote_retries += 1
            try:
                attempt.acked = await cast(attempt, card)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                attempt.answers.append(type(exc).__name__)
            if not attempt.acked:
                await asyncio.sleep(0.5)

    async def _slack_post(self, body: bytes, headers: dict[str, str], retry: int) -> int:
        if retry:
            headers = {**headers, "X-Slack-Retry-Num": str(retry)}
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        server = self.server()
        async with self.http.post(
            server.url + "/slack/events",
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=SLACK_ACK_SECONDS),
        ) as resp:
            await resp.read()
            self._last_server = f"{server.name}#{server.starts}:{resp.status}@{time.time():.2f}"
            return resp.status

    async def _slack_vote(self, attempt: Attempt, card: tuple[str, str]) -> bool:
        channel, ts = card
        user = SLACK_IDS[attempt.email]
        # Slack resends the same body up to three times; after that the person clicks again.
        retry = (attempt.tries - 1) % 4
        if attempt.choice == "approve":
            if retry == 0 or attempt.body is None:
                message = self.slack.messages[(channel, ts)].as_payload()
                attempt.body = slack_req.block_actions(
                    secret=SLACK_SECRET,
                    action_id=slack_cards.ACTION_APPROVE,
                    value=attempt.request_id,
                    user_id=user,
                    user_name=user.lower(),
                    channel_id=channel,
                    message_ts=ts,
                    message=message,
                )
            body, headers = attempt.body
            status = await self._slack_post(body, headers, retry)
            attempt.answers.append(self._last_server)
            return status == 200
        # Deny: the click opens the reason modal; the submission is the vote.
        click, click_headers = slack_req.block_actions(
            secret=SLACK_SECRET,
            action_id=slack_cards.ACTION_DENY,
            value=attempt.request_id,
            user_id=user,
            user_name=user.lower(),
            channel_id=channel,
            message_ts=ts,
        )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            await self._slack_post(click, click_headers, 0)
        body, headers = slack_req.view_submission(
            secret=SLACK_SECRET,
            callback_id=slack_cards.CALLBACK_DENY,
            private_metadata=attempt.request_id,
            user_id=user,
            user_name=user.lower(),
            values={"reason": {"reason": "not during the soak"}},
        )
        status = await self._slack_post(body, headers, 0)
        attempt.answers.append("submit " + self._last_server)
        return status == 200

    async def _teams_vote(self, attempt: Attempt, card_id: str) -> bool:
        user = TEAMS_IDS[attempt.email]
        verb = teams_cards.VERB_APPROVE if attempt.choice == "approve" else teams_cards.VERB_DENY
        data: dict[str, Any] = {"request_id": attempt.request_id}
        if attempt.choice == "deny":
            data["reason"] = "not during the soak"
        activity = acts.invoke_action(
            verb,
            data,
            app_id=TEAMS_APP_ID,
            reply_to_id=card_id,
            **self.bf.sender_kwargs(user),
            **self.bf.conversation_kwargs(self.channel),
        )
        token = await asyncio.to_thread(self.bf.sign_activity_token, activity["serviceUrl"])
        async with self.http.post(
            self.server().url + "/api/messages",
            data=json.dumps(activity),
            headers=acts.headers(token),
            timeout=aiohttp.ClientTimeout(total=15),
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                return False
            answer = json.loads(text) if text.strip() else {}
            return bool(answer.get("statusCode") == 200)

    # -- scenarios -------------------------------------------------------------------

    def scenario(self) -> str:
        roll = self.rng.random()
        if roll < 0.40:
            return "approve"
        if roll < 0.65:
            return "deny"
        if roll < 0.85:
            return "both-platforms"
        return "expire"

    def plan(self, request_id: str, scenario: str) -> Planned:
        rng = self.rng
        people = rng.sample(APPROVERS, 4)
        platform = lambda: rng.choice(("slack", "teams"))  # noqa: E731
        plan = Planned(request_id, scenario, expires=scenario == "expire")
        add = plan.attempts.append
        if scenario == "approve":
            add(Attempt(request_id, people[0], platform(), "approve"))
            add(Attempt(request_id, people[1], platform(), "approve"))
            if rng.random() < 0.4:  # a late third approval: refused (decided) or counted
                add(Attempt(request_id, people[2], platform(), "approve"))
        elif scenario == "deny":
            add(Attempt(request_id, people[0], platform(), "approve"))
            add(Attempt(request_id, people[1], platform(), "deny"))
        elif scenario == "both-platforms":  # one person clicks in Slack and in Teams
            add(Attempt(request_id, people[0], "slack", "approve"))
            add(Attempt(request_id, people[0], "teams", "approve"))
            add(Attempt(request_id, people[1], platform(), "approve"))
        elif rng.random() < 0.6:  # expire, with one approval short of the quorum
            add(Attempt(request_id, people[0], platform(), "approve"))
        return plan

    async def run_plan(self, plan: Planned) -> None:
        if plan.scenario == "both-platforms":
            first, second, third = plan.attempts
            await asyncio.gather(self.vote(first), self.vote(second))
            await asyncio.sleep(self.rng.uniform(0, 1))
            await self.vote(third)
            return
        if plan.scenario == "approve" and len(plan.attempts) == 3 and self.rng.random() < 0.5:
            await asyncio.gather(*(self.vote(a) for a in plan.attempts))  # concurrent clicks
            return
        for attempt in plan.attempts:
            await asyncio.sleep(self.rng.uniform(0, 1.5))
            await self.vote(attempt)

    async def load(self, seconds: float, rate: float) -> list[asyncio.Task[None]]:
        """Create requests at ``rate`` per second for ``seconds``; start each one's votes."""
        voting: list[asyncio.Task[None]] = []
        creating: list[asyncio.Task[None]] = []
        start = time.monotonic()
        index = 0

        async def one(i: int, scenario: str) -> None:
            request_id = await self.create(i, expires=scenario == "expire")
            if request_id is None:
                return
            plan = self.plan(request_id, scenario)
            self.plans.append(plan)
            voting.append(asyncio.create_task(self.run_plan(plan)))

        while time.monotonic() - start < seconds:
            creating.append(asyncio.create_task(one(index, self.scenario())))
            index += 1
            await asyncio.sleep(self.rng.expovariate(rate))
        await asyncio.gather(*creating)
        return voting


# --------------------------------------------------------------------------- faults


async def _at(start: float, offset: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
    await action()


async def run_faults(soak: Soak, seconds: float, admin_dsn: str, database: str) -> None:
    """The fault schedule, spread over the load period."""
    slack, bf, receiver = soak.slack, soak.bf, soak.receiver
    flap = max(3.0, seconds * 0.08)

    async def slack_429() -> None:
        slack.rate_limit("chat.postMessage", times=3, retry_after=1)
        slack.rate_limit("chat.update", times=3, retry_after=1)
        soak.log_fault("slack-429", "6 calls")

    async def slack_500() -> None:
        slack.fail("chat.update", status=500, times=4)
        slack.fail("chat.postMessage", status=503, times=2)
        soak.log_fault("slack-5xx", "6 calls")

    async def slack_hang() -> None:
        slack.hang("chat.postMessage", seconds=4, times=2)  # slow, inside the 10 s timeout
        slack.hang("chat.update", seconds=12, times=1)  # past the client's timeout
        soak.log_fault("slack-hang", "2 x 4 s postMessage, 1 x 12 s update")

    async def teams_faults() -> None:
        bf.rate_limit("connector", times=3, retry_after=1)
        bf.fail("update", status=500, times=3)
        soak.log_fault("teams-429-500", "3 x 429, 3 x 500")

    async def receiver_mode(mode: str) -> None:
        receiver.mode = mode
        soak.log_fault(f"callback-{mode}", f"{flap:.0f} s")
        await asyncio.sleep(flap)
        receiver.mode = "ok"

    async def kill_and_restart() -> None:
        victim = soak.servers[1]
        victim.kill()
        soak.log_fault("sigkill", victim.name)
        await asyncio.sleep(2)
        victim.start()
        await victim.ready()

    async def drop_connections() -> None:
        dropped = await terminate_backends(admin_dsn, database)
        soak.log_fault("pg-terminate", f"{dropped} backends")

    start = time.monotonic()
    schedule = [
        (0.10, slack_429),
        (0.15, teams_faults),
        (0.20, slack_500),
        (0.25, lambda: receiver_mode("error")),
        (0.30, slack_hang),
        (0.35, drop_connections),
        (0.45, kill_and_restart),
        (0.55, lambda: receiver_mode("drop")),
        (0.65, drop_connections),
        (0.70, slack_429),
        (0.85, drop_connections),
    ]
    await asyncio.gather(*(_at(start, f * seconds, action) for f, action in schedule))


# --------------------------------------------------------------------------- checks


def _slack_buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        element.get("action_id", "")
        for block in blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if element.get("action_id") != slack_cards.ACTION_DETAILS
    ]


def _teams_verbs(card: Any) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") != (
                teams_cards.VERB_REFRESH
            ):
                found.append(str(node.get("verb")))
            for key, value in node.items():
                if key != "refresh":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return found


def _slack_final(blocks: list[dict[str, Any]], label: str) -> bool:
    return not _slack_buttons(blocks) and label in json.dumps(blocks, ensure_ascii=False)


def _teams_final(card: Any, label: str) -> bool:
    return (
        card is not None
        and not _teams_verbs(card)
        and label in json.dumps(card, ensure_ascii=False)
    )


def _card_of(attachments: list[dict[str, Any]]) -> Any:
    return next(
        (
            a.get("content")
            for a in attachments
            if a.get("contentType") == acts.ADAPTIVE_CARD_CONTENT_TYPE
        ),
        None,
    )


def expected_status(plan: Planned) -> str | None:
    """The outcome the acknowledged votes give, whatever their order (by construction)."""
    acked = [a for a in plan.attempts if a.acked]
    approvers = {a.email for a in acked if a.choice == "approve"}
    denied = any(a.choice == "deny" for a in acked)
    if denied and len(approvers) < 2:
        return "denied"
    if len(approvers) >= 2 and not denied:
        return "approved"
    if plan.expires:
        return "expired"
    return None  # a vote never got through: nothing to expect


def replay(votes: list[asyncpg.Record]) -> tuple[str | None, int]:
    """The status the stored votes give in their order, and how many came after it."""
    approvals: set[str] = set()
    for position, vote in enumerate(votes):
        if vote["choice"] == "deny":
            return "denied", len(votes) - position - 1
        approvals.add(vote["voter"])
        if len(approvals) >= 2:
            return "approved", len(votes) - position - 1
    return None, 0


async def read_state(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        requests = {r["id"]: r for r in await conn.fetch("SELECT * FROM requests")}
        votes: dict[str, list[asyncpg.Record]] = {}
        for v in await conn.fetch("SELECT * FROM votes ORDER BY at, id"):
            votes.setdefault(v["request_id"], []).append(v)
        ledger = await conn.fetch(
            "SELECT seq, event, request_id, actor, data FROM ledger ORDER BY seq"
        )
    finally:
        await conn.close()
    return {"requests": requests, "votes": votes, "ledger": ledger}


def card_problems(soak: Soak, request_id: str, status: str) -> list[str]:
    """Why the request's cards do not (yet) show ``status``; empty when they all do."""
    problems = []
    label = FINAL_LABEL.get(status, status)
    slack_cards_of = soak.slack_cards.get(request_id, [])
    if not slack_cards_of:
        problems.append("no Slack card")
    for key in slack_cards_of:
        message = soak.slack.messages[key]
        if not _slack_final(message.blocks, label):
            was_final = any(_slack_final(h.blocks, label) for h in message.history)
            problems.append(f"Slack card {key[1]} {'reverted' if was_final else 'not final'}")
    teams_cards_of = soak.teams_cards.get(request_id, [])
    if not teams_cards_of:
        problems.append("no Teams card")
    for activity_id in teams_cards_of:
        activity = soak.bf.activity(activity_id)
        if not _teams_final(activity.card, label):
            was_final = any(_teams_final(_card_of(h.attachments), label) for h in activity.history)
            problems.append(f"Teams card {activity_id} {'reverted' if was_final else 'not final'}")
    return problems


# --------------------------------------------------------------------------- the soak


async def test_soak_with_faults(soak_database: tuple[str, str], tmp_path: Path) -> None:
    database_url, database = soak_database
    dsn = _raw_pg_dsn(database_url)
    admin_dsn = _raw_pg_dsn(database_url.rpartition("/")[0] + "/postgres")
    rng = random.Random(SEED)
    policy = write_policy(tmp_path)
    began = time.monotonic()

    # The API client (and its callback secret), made through the service as an operator would.
    engine = create_engine(database_url)
    try:
        service = ApprovalService(
            SqlStore(engine), load_policy(policy), sealer=SecretBox(SERVER_SECRET)
        )
        _client, token, callback_secret = await service.add_client("soak-agent", "owen@example.com")
    finally:
        await engine.dispose()
    assert callback_secret is not None

    receiver = CallbackReceiver(callback_secret)
    await receiver.start()
    servers: list[Server] = []
    try:
        async with (
            FakeSlack(token=SLACK_TOKEN) as slack,
            FakeBotFramework(app_id=TEAMS_APP_ID, app_password=TEAMS_APP_PASSWORD) as bf,
            aiohttp.ClientSession() as http,
        ):
            for email in APPROVERS:
                slack.add_user(SLACK_IDS[email], email, name=email.split("@")[0])
                bf.add_user(TEAMS_IDS[email], email, email.split("@")[0].title())
            channel = bf.add_channel(TEAMS_TEAM, "General")
            env = server_env(database_url, policy, slack.api_url, bf)
            servers = [Server(name, env, tmp_path) for name in ("a", "b", "c")]
            for server in servers:
                server.start()
            await asyncio.gather(*(s.ready() for s in servers))
            soak = Soak(servers, slack, bf, channel, receiver, token, http, rng)
            await install_teams_app(soak)

            # ---- load and faults
            stop_index = asyncio.Event()
            indexer = asyncio.create_task(soak.indexer(stop_index))
            load_began = time.monotonic()
            faults = asyncio.create_task(run_faults(soak, SOAK_SECONDS, admin_dsn, database))
            voting = await soak.load(SOAK_SECONDS, REQUESTS_PER_SECOND)
            await faults
            await asyncio.gather(*voting)
            load_ended = time.monotonic()

            # ---- settle: every request final, every callback delivered, every card final
            settle_began = time.monotonic()
            deadline = settle_began + SETTLE_SECONDS
            while True:
                soak.index_cards()
                await soak.look_at_teams_duplicates()
                state = await read_state(dsn)
                unsettled = unsettled_requests(soak, state)
                # A card the platform overwrote with a late, older update is rewritten
                # by the forced re-sync that follows a failed sync (30 s later): wait.
                healing = reverted_cards(soak, state)
                if not (unsettled or healing) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            settled_after = time.monotonic() - settle_began
            await asyncio.sleep(2)  # late duplicates get a chance to show up
            soak.index_cards()
            state = await read_state(dsn)
            stop_index.set()
            await indexer

            verify = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "countersign",
                "ledger",
                "verify",
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            verified = (await asyncio.wait_for(verify.communicate(), 120))[0].decode()
            report = figures(soak, state, load_ended - load_began, settled_after, servers)
            report["total_seconds"] = round(time.monotonic() - began, 1)
            report["ledger_verify"] = verified.strip()
            report["teams_cards_found_again"] = sorted(soak.looked_at)
            report["cards_reverted"] = [
                p for p in unsettled_requests(soak, state, with_reverted=True) if "reverted" in p
            ]
            (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=2))
            print("\nSOAK REPORT", json.dumps(report, indent=2))

            check_single_slack_cards(soak)
            assert not unsettled, f"not settled within {SETTLE_SECONDS:.0f} s: {unsettled[:10]}"
            check_outcomes(soak, state)
            check_callbacks(soak, state)
            reverted = check_cards(soak, state)
            assert verify.returncode == 0, verified
            if reverted:
                # Everything else held on every request. It needs a race lost at one
                # exact point, so it cannot be a strict xfail (docs/RELIABILITY.md).
                pytest.xfail(
                    f"known product problem (docs/RELIABILITY.md): problem 1b, "
                    f"{len(reverted)} card(s) went back from the final state to a stale one: "
                    f"{reverted[:5]}"
                )
    finally:
        for server in servers:
            server.stop()
        await receiver.close()
        keep = os.environ.get("SOAK_KEEP")
        if keep:  # the server logs and the report, for a post-mortem
            shutil.copytree(tmp_path, Path(keep) / tmp_path.name, dirs_exist_ok=True)


async def install_teams_app(soak: Soak) -> None:
    """The app is installed in the team and by each approver, as an admin would roll it out."""
    first = TEAMS_IDS[APPROVERS[0]]
    conversations = [(first, soak.channel)] + [
        (TEAMS_IDS[e], soak.bf.personal_conversation_id(TEAMS_IDS[e])) for e in APPROVERS
    ]
    for user, conversation in conversations:
        activity = acts.installation_update(
            app_id=TEAMS_APP_ID,
            **soak.bf.sender_kwargs(user),
            **soak.bf.conversation_kwargs(conversation),
        )
        token = soak.bf.sign_activity_token(activity["serviceUrl"])
        async with soak.http.post(
            soak.servers[0].url + "/api/messages",
            data=json.dumps(activity),
            headers=acts.headers(token),
        ) as resp:
            assert resp.status in (200, 201), await resp.text()


def _ledger_votes(state: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (e["request_id"], e["actor"], json.loads(e["data"])["platform"])
        for e in state["ledger"]
        if e["event"] in ("vote.cast", "vote.refused")
    }


def check_single_slack_cards(soak: Soak) -> None:
    """One Slack card per request in the channel: a post left in doubt is found, not repeated."""
    doubled = {r: len(c) for r, c in soak.slack_cards.items() if len(c) > 1}
    assert not doubled, f"requests with more than one Slack card: {doubled}"


def unsettled_requests(
    soak: Soak, state: dict[str, Any], *, with_reverted: bool = False
) -> list[str]:
    delivered = soak.receiver.delivered()
    waiting = []
    for plan in soak.plans:
        row = state["requests"].get(plan.request_id)
        status = row["status"] if row else "missing"
        if status not in FINAL_LABEL:
            waiting.append(f"{plan.request_id}: {status}")
            continue
        if plan.request_id not in delivered:
            waiting.append(f"{plan.request_id}: callback not delivered")
            continue
        # A card that showed the final state and was then overwritten is waited for
        # separately (``reverted_cards``): only a forced re-sync repairs it.
        problems = [
            p
            for p in card_problems(soak, plan.request_id, status)
            if with_reverted or "reverted" not in p
        ]
        if problems:
            waiting.append(f"{plan.request_id}: {', '.join(problems)}")
    return waiting


def reverted_cards(soak: Soak, state: dict[str, Any]) -> list[str]:
    """Cards that showed the final state and were then overwritten."""
    return [p for p in unsettled_requests(soak, state, with_reverted=True) if "reverted" in p]


def check_outcomes(soak: Soak, state: dict[str, Any]) -> None:
    ledger = state["ledger"]
    finals = Counter(
        e["request_id"] for e in ledger if e["event"] in ("request.decided", "request.expired")
    )
    voted = _ledger_votes(state)
    wrong = []
    for plan in soak.plans:
        row = state["requests"][plan.request_id]
        votes = state["votes"].get(plan.request_id, [])
        status = row["status"]
        expected = expected_status(plan)
        if expected is not None and status != expected:
            wrong.append(f"{plan.request_id} ({plan.scenario}): {status}, expected {expected}")
        replayed, after = replay(votes)
        if replayed is None:
            if status != "expired" or row["decided_at"] < row["expires_at"]:
                wrong.append(f"{plan.request_id}: {status} but its votes decide nothing")
        elif replayed != status or after:
            wrong.append(f"{plan.request_id}: {status}, its votes say {replayed} (+{after})")
        if finals[plan.request_id] != 1:
            wrong.append(f"{plan.request_id}: {finals[plan.request_id]} decisions in the ledger")
        intended = {(a.email, a.choice) for a in plan.attempts}
        for vote in votes:
            if (vote["voter"], vote["choice"]) not in intended:
                wrong.append(f"{plan.request_id}: a vote nobody cast: {vote['voter']}")
        for attempt in plan.attempts:
            key = (plan.request_id, attempt.email, attempt.platform)
            if attempt.acked and key not in voted:
                wrong.append(
                    f"{plan.request_id} ({plan.scenario}): acknowledged click lost: "
                    f"{key[1:]} {attempt.choice}, answers {attempt.answers}"
                )
    assert not wrong, "\n".join(wrong)


def check_callbacks(soak: Soak, state: dict[str, Any]) -> None:
    assert all(d.signature_ok for d in soak.receiver.seen), "a callback with a bad signature"
    delivered = soak.receiver.delivered()
    wrong = []
    for plan in soak.plans:
        ids = delivered.get(plan.request_id, set())
        if len(ids) != 1:
            wrong.append(f"{plan.request_id}: {len(ids)} distinct deliveries")
        outcomes = {d.outcome for d in soak.receiver.seen if d.request_id == plan.request_id}
        if outcomes != {state["requests"][plan.request_id]["status"]}:
            wrong.append(f"{plan.request_id}: callback said {outcomes}")
    assert not wrong, "\n".join(wrong)


def check_cards(soak: Soak, state: dict[str, Any]) -> list[str]:
    """Every card shows the final state, one per channel; returns the reverted ones."""
    wrong = []
    reverted = []
    for plan in soak.plans:
        status = state["requests"][plan.request_id]["status"]
        problems = card_problems(soak, plan.request_id, status)
        reverted += [f"{plan.request_id}: {p}" for p in problems if "reverted" in p]
        problems = [p for p in problems if "reverted" not in p]
        if problems:
            wrong.append(f"{plan.request_id}: {', '.join(problems)}")
        # A second Teams card (its post's answer lost) is allowed once it was found
        # again and shows the final state like the first (Teams cannot list messages).
        found = soak.slack_cards.get(plan.request_id, [])
        if len(found) > 1:
            wrong.append(f"{plan.request_id}: {len(found)} Slack cards in the channel")
    assert not wrong, "\n".join(wrong)
    return reverted


def figures(
    soak: Soak, state: dict[str, Any], load_seconds: float, settled: float, servers: list[Server]
) -> dict[str, Any]:
    f = soak.figures
    attempts = [a for p in soak.plans for a in p.attempts]
    statuses = Counter(
        state["requests"][p.request_id]["status"]
        for p in soak.plans
        if p.request_id in state["requests"]
    )
    logs = "".join(s.log_path.read_text(errors="replace") for s in servers)
    return {
        "soak_seconds": SOAK_SECONDS,
        "load_seconds": round(load_seconds, 1),
        "requests_accepted": len(soak.plans),
        "requests_201": f.created_201,
        "create_retries": f.create_retries,
        "create_failed": f.create_failed,
        "scenarios": dict(Counter(p.scenario for p in soak.plans)),
        "outcomes": dict(statuses),
        "votes_planned": len(attempts),
        "votes_acked": sum(a.acked for a in attempts),
        "votes_by_platform": dict(Counter(a.platform for a in attempts)),
        "vote_posts": f.votes_sent,
        "vote_retries": f.vote_retries,
        "votes_stored": sum(len(v) for v in state["votes"].values()),
        "refused_in_ledger": sum(1 for e in state["ledger"] if e["event"] == "vote.refused"),
        "ledger_entries": len(state["ledger"]),
        "faults": dict(f.faults),
        "fault_log": f.fault_log,
        "settle_seconds": round(settled, 1),
        "callback_posts": len(soak.receiver.seen),
        "callbacks_delivered": sum(len(v) for v in soak.receiver.delivered().values()),
        "callback_duplicates": soak.receiver.duplicates(),
        "slack_calls": len(soak.slack.calls),
        "slack_cards": sum(len(v) for v in soak.slack_cards.values()),
        "teams_cards": sum(len(v) for v in soak.teams_cards.values()),
        "teams_calls": len(soak.bf.calls),
        "server_tracebacks": logs.count("Traceback"),
    }
