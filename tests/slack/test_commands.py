"""``/countersign`` words → what to show; filters only ever become typed query values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.slack.manifest import BOT_SCOPES, manifest
from countersign.chat.commands import PAGE_SIZE, decode_more, encode_more, parse_command
from countersign.cli import main
from countersign.core.model import Status
from countersign.ports import HistoryQuery


@pytest.mark.parametrize(
    ("text", "name"),
    [("", "help"), ("help", "help"), ("  PENDING ", "pending"), ("show req_1", "show")],
)
def test_known_words(text: str, name: str) -> None:
    command = parse_command(text)
    assert command.name == name
    assert command.problem is None


@pytest.mark.parametrize(
    "text",
    [
        "approve everything",
        "history status:bogus",
        "history color:red",
        "history by:not-an-email",
        "history since:yesterday",
        "history action",
        "show",
        "show a b",
        "pending now",
        "history action:" + "x" * 201,
    ],
)
def test_unknown_input_gets_help_with_the_problem(text: str) -> None:
    command = parse_command(text)
    assert command.name == "help"
    assert command.problem


def test_history_filters_become_typed_values() -> None:
    command = parse_command(
        "history status:Approved action:db.export by:Dana@Example.com since:2026-11-01"
    )
    assert command.name == "history"
    assert command.query == HistoryQuery(
        status=Status.APPROVED,
        action="db.export",
        requested_by="dana@example.com",
        since=datetime(2026, 11, 1, tzinfo=UTC),
        limit=PAGE_SIZE,
    )


def test_sql_looking_filters_are_just_values() -> None:
    command = parse_command("history action:x'OR'1'='1;DROP-TABLE-requests")
    assert command.name == "history"
    assert command.query.action == "x'OR'1'='1;DROP-TABLE-requests"


def test_more_button_round_trip_and_refuses_foreign_values() -> None:
    query = parse_command("history status:denied since:2026-11-01T10:00:00+00:00").query
    value = encode_more(query, "req_01CURSOR")
    assert len(value) <= 2000
    again = decode_more(value)
    assert again.status is Status.DENIED
    assert again.since == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert again.cursor == "req_01CURSOR"
    with pytest.raises((ValueError, KeyError)):
        decode_more(json.dumps({"q": {"client": "someone-else"}, "c": "x"}))
    with pytest.raises(ValueError):
        decode_more("not json")


def test_manifest_points_at_the_public_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTERSIGN_PUBLIC_URL", "https://approvals.example.com/")
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    assert main(["slack", "manifest"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == manifest("https://approvals.example.com")
    url = "https://approvals.example.com/slack/events"
    assert printed["settings"]["interactivity"]["request_url"] == url
    assert printed["features"]["slash_commands"][0]["url"] == url
    assert printed["features"]["slash_commands"][0]["command"] == "/countersign"
    scopes = set(printed["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "users:read", "users:read.email", "commands", "im:write"} <= scopes
    # conversations.history and conversations.list, to find a card whose post went unanswered
    history = {"channels:history", "groups:history", "im:history", "channels:read", "groups:read"}
    assert history <= scopes
    assert scopes == set(BOT_SCOPES)
