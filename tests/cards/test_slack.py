"""Slack cards: golden files for every state, and the behaviour around them.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/cards`` and
review the diff: it is exactly what approvers will see change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cards import slack
from countersign.core import Status
from tests.cards.factory import PARAMS, PEOPLE, cancelled, decided, expired, make, vote
from tests.cards.limits import check_message, check_modal

GOLDEN = Path(__file__).parent / "golden"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def _one_of_two() -> Any:
    return vote(make(), ALICE, "approve", comment="Looks fine, small export.")


def _approved() -> Any:
    return vote(_one_of_two(), BOB, "approve", minutes=2)


def _approved_with_changes() -> Any:
    edit = {**PARAMS, "rows": 1000, "columns": ["id"]}
    r = vote(make(), ALICE, "approve", edit=edit, comment="1000 rows is enough")
    return vote(r, BOB, "approve", edit=edit, minutes=2)


def _denied() -> Any:
    return vote(_one_of_two(), BOB, "deny", comment="Not during the freeze.\nAsk again on Monday.")


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "pending": lambda: slack.request_message(make(), people=PEOPLE),
    "pending_1_of_2": lambda: slack.request_message(_one_of_two(), people=PEOPLE),
    "approved": lambda: slack.request_message(_approved(), people=PEOPLE),
    "approved_with_changes": lambda: slack.request_message(_approved_with_changes(), people=PEOPLE),
    "denied": lambda: slack.request_message(_denied(), people=PEOPLE),
    "expired": lambda: slack.request_message(expired(_one_of_two()), people=PEOPLE),
    "cancelled": lambda: slack.request_message(
        cancelled(make(), "the agent found another way"), people=PEOPLE
    ),
    "vote_reply_approve": lambda: slack.vote_reply(
        _one_of_two(), _one_of_two().votes[0], people=PEOPLE
    ),
    "vote_reply_deny": lambda: slack.vote_reply(_denied(), _denied().votes[1], people=PEOPLE),
    "outcome_approved_with_changes": lambda: slack.outcome_message(
        _approved_with_changes(), people=PEOPLE
    ),
    "reminder": lambda: slack.reminder_message(_one_of_two(), [BOB, CAROL], people=PEOPLE),
    "escalation": lambda: slack.escalation_message(_one_of_two(), [CAROL], people=PEOPLE),
    "details_modal": lambda: slack.details_modal(_approved_with_changes()),
    "approve_modal": lambda: slack.approve_modal(make()),
    "deny_modal": lambda: slack.deny_modal(make()),
    "edit_modal": lambda: slack.edit_modal(make()),
    "request_list": lambda: slack.request_list(
        [make(), _approved()], title="History", people=PEOPLE, more_value="cursor-2"
    ),
    "help": slack.help_message,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    rendered = CASES[name]()
    text = json.dumps(rendered, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")
    checker = check_modal(rendered) if rendered.get("type") == "modal" else check_message(rendered)
    assert checker.problems == []


def _action_ids(msg: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_pending_card_has_the_vote_buttons_with_the_request_id() -> None:
    msg = slack.request_message(make())
    (block,) = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert block["block_id"] == slack.BLOCK_ACTIONS
    approve, deny, edit = block["elements"]
    assert (approve["action_id"], approve["style"]) == ("countersign.approve", "primary")
    assert (deny["action_id"], deny["style"]) == ("countersign.deny", "danger")
    assert "confirm" in deny
    assert edit["action_id"] == "countersign.edit"
    assert {b["value"] for b in block["elements"]} == {make().id}


@pytest.mark.parametrize(
    "request_",
    [
        _approved(),
        _denied(),
        expired(make()),
        cancelled(make()),
        decided(make(), Status.APPROVED),
    ],
    ids=["approved", "denied", "expired", "cancelled", "approved-bare"],
)
def test_final_cards_have_no_vote_buttons(request_: Any) -> None:
    msg = slack.request_message(request_, people=PEOPLE)
    assert _action_ids(msg) == []
    assert check_message(msg).problems == []


def test_details_button_iff_needed() -> None:
    small = slack.request_message(make())
    assert slack.ACTION_DETAILS not in _action_ids(small)
    long_value = slack.request_message(make(params={"sql": "select 1 " * 100}))
    assert slack.ACTION_DETAILS in _action_ids(long_value)
    many = slack.request_message(make(params={f"k{i}": i for i in range(20)}))
    assert slack.ACTION_DETAILS in _action_ids(many)
    text = json.dumps(many)
    assert "and 8 more" in text
    # A decided card whose params did not fit keeps Details, and only Details.
    final = slack.request_message(expired(make(params={"sql": "x" * 500})))
    assert _action_ids(final) == [slack.ACTION_DETAILS]


def test_mentions_known_people_and_shows_others_by_address() -> None:
    text = json.dumps(slack.request_message(_one_of_two(), people=PEOPLE))
    assert "<@U0DANA>" in text and "<@U0ALICE>" in text
    text = json.dumps(slack.request_message(_one_of_two()))
    assert "<@" not in text and "`dana@example.com`" in text
    # A user id that is not one cannot smuggle markup in.
    text = json.dumps(slack.request_message(make(), people={"dana@example.com": "U1><!here"}))
    assert "<!here" not in text


def test_dates_render_in_the_readers_time_zone_with_a_utc_fallback() -> None:
    text = json.dumps(slack.request_message(make()))
    assert "Expires <!date^1795257000^{date_short_pretty} at {time}|2026-11-21 10:30 UTC>" in text


def test_vote_reply_counts_the_params_the_vote_approved() -> None:
    r = vote(make(quorum=3), ALICE, "approve")
    r = vote(r, BOB, "approve", edit={"table": "x"}, minutes=2)
    reply = slack.vote_reply(r, r.votes[1], people=PEOPLE)["blocks"][0]["text"]["text"]
    assert reply.startswith("✅ `bob@example.com` approved _with changes_ (1 of 3)")
    assert "• `table`: `customers` → `x`" in reply
    assert "That decided it" not in reply


def test_vote_reply_for_the_deciding_vote_says_so() -> None:
    r = _approved()
    reply = slack.vote_reply(r, r.votes[-1])["blocks"][0]["text"]["text"]
    assert reply.endswith("That decided it: the request is *approved*.")
    earlier = slack.vote_reply(r, r.votes[0])["blocks"][0]["text"]["text"]
    assert "That decided it" not in earlier


def test_modal_ids_and_metadata() -> None:
    r = make()
    deny = slack.deny_modal(r)
    assert (deny["callback_id"], deny["private_metadata"]) == ("countersign.deny", r.id)
    assert deny["submit"]["text"] == "Deny"
    (reason,) = [b for b in deny["blocks"] if b["type"] == "input"]
    assert (reason["block_id"], reason["element"]["action_id"]) == ("reason", "reason")
    assert reason["optional"] is False and reason["element"]["multiline"] is True
    assert reason["element"]["max_length"] == 2000

    edit = slack.edit_modal(r)
    assert (edit["callback_id"], edit["private_metadata"]) == ("countersign.edit", r.id)
    assert edit["submit"]["text"] == "Approve"
    params, comment = [b for b in edit["blocks"] if b["type"] == "input"]
    assert (params["block_id"], params["element"]["action_id"]) == ("params", "params")
    assert json.loads(params["element"]["initial_value"]) == PARAMS
    assert (comment["block_id"], comment["optional"]) == ("comment", True)

    details = slack.details_modal(r)
    assert details["type"] == "modal" and "submit" not in details
    for view in (deny, edit, details):
        assert check_modal(view).problems == []


def test_edit_modal_leaves_params_too_large_for_the_box_empty() -> None:
    big = {"sql": "x" * 5000}
    edit = slack.edit_modal(make(params=big))
    params = next(b for b in edit["blocks"] if b.get("block_id") == "params")
    assert "initial_value" not in params["element"]
    assert "cannot be edited here" in params["hint"]["text"]
    assert check_modal(edit).problems == []


def test_details_modal_splits_large_params_into_code_sections() -> None:
    params = {f"k{i}": "&<>*" * 1000 for i in range(8)}
    view = slack.details_modal(make(params=params))
    assert check_modal(view).problems == []
    code = [b["text"]["text"] for b in view["blocks"] if b["text"]["text"].startswith("```")]
    assert len(code) > 5
    assert all(t.endswith("\n```") for t in code)
    joined = "".join(t[4:-4] for t in code)
    assert joined.count("&amp;&lt;&gt;*") == 8000


def test_details_modal_never_exceeds_100_blocks() -> None:
    params = {f"k{i}": "&" * 3000 for i in range(60)}
    view = slack.details_modal(make(params=params, context={"c": "&" * 2000}))
    assert len(view["blocks"]) == 100
    assert "GET /v1/requests/" in view["blocks"][-1]["elements"][0]["text"]
    assert check_modal(view).problems == []


@pytest.mark.parametrize("with_buttons", [False, True])
def test_request_list_never_exceeds_50_blocks(with_buttons: bool) -> None:
    requests = [make(request_id=f"req_{i:04d}") for i in range(200)]
    msg = slack.request_list(
        requests, title="Waiting", more_value="c" * 2000, with_buttons=with_buttons
    )
    assert len(msg["blocks"]) <= 50
    assert check_message(msg).problems == []
    shown = slack.list_capacity(with_buttons=with_buttons)
    assert f"Showing {shown} of 200 requests" in json.dumps(msg)
    more = msg["blocks"][-1]
    assert more["block_id"] == slack.BLOCK_MORE
    assert more["elements"][0]["action_id"] == "countersign.more"
    assert more["elements"][0]["value"] == "c" * 2000
    if with_buttons:
        ids = [b["block_id"] for b in msg["blocks"] if b["type"] == "actions"][:-1]
        assert len(ids) == shown and len(set(ids)) == shown


def test_request_list_buttons_only_for_pending_and_empty_list() -> None:
    msg = slack.request_list([_approved(), make()], title="Mine", with_buttons=True)
    actions = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1 and actions[0]["elements"][0]["value"] == make().id
    empty = slack.request_list([], title="Nothing")
    assert "Nothing here" in json.dumps(empty)
    assert check_message(empty).problems == []


def test_list_more_value_over_2000_is_refused_not_cut() -> None:
    with pytest.raises(ValueError, match="limit 2000"):
        slack.request_list([make()], title="x", more_value="c" * 2001)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("self_approval", "no self-approval"),
        ("not_an_approver", "not an approver"),
        ("already_voted", "already voted"),
        ("already_decided", "already been decided"),
        ("expired", "expired"),
        ("not_found", "doesn't exist"),
        ("invalid_request", "not valid"),
        ("invalid_edit", "edited params"),
        ("something_new", "didn't work"),
    ],
)
def test_refusal_text(code: str, words: str) -> None:
    text = slack.refusal_text(code, "bob@example.com is not an approver of rule 'prod' <!here>")
    assert words in text
    assert "\n> " in text and "<!here>" not in text and "&lt;!here&gt;" in text


def test_outcome_and_notices_pass_the_checker() -> None:
    for r in (make(), _approved(), _approved_with_changes(), _denied(), expired(make())):
        assert check_message(slack.outcome_message(r, people=PEOPLE)).problems == []
        assert check_message(slack.reminder_message(r, [BOB], people=PEOPLE)).problems == []
        assert check_message(slack.escalation_message(r, [CAROL, BOB])).problems == []
