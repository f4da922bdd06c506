"""Teams cards: golden files for every state, schema validation, and the behaviour around them.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/cards/teams``
and review the diff: it is exactly what approvers will see change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cards import teams
from cards.slack import REFUSALS
from countersign.core import Status
from tests.cards.factory import PARAMS, cancelled, decided, expired, make, vote
from tests.cards.teams.checks import check, escaping_problems, walk

GOLDEN = Path(__file__).parent / "golden"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
NAMES = {ALICE: "Alice", "dana@example.com": "Dana"}


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
    "pending": lambda: teams.request_card(make(), people=NAMES, user_ids=["29:alice", "29:bob"]),
    "pending_1_of_2": lambda: teams.request_card(_one_of_two(), people=NAMES),
    "pending_approve_comment": lambda: teams.request_card(
        make(), people=NAMES, approve_comment=True
    ),
    "pending_viewer_voted": lambda: teams.request_card(_one_of_two(), viewer=ALICE, people=NAMES),
    "approved": lambda: teams.request_card(_approved(), people=NAMES),
    "approved_with_changes": lambda: teams.request_card(_approved_with_changes(), people=NAMES),
    "denied": lambda: teams.request_card(_denied(), people=NAMES),
    "expired": lambda: teams.request_card(expired(_one_of_two()), people=NAMES),
    "cancelled": lambda: teams.request_card(cancelled(make(), "the agent found another way")),
    "refusal": lambda: teams.refusal_card("not_an_approver", "bob is not an approver of 'prod'"),
    "list": lambda: teams.request_list_card(
        [make(), _approved()], title="History", more_data={"cursor": "c2"}, people=NAMES
    ),
    "list_with_actions": lambda: teams.request_list_card(
        [make(), _approved()], title="Waiting for you", with_actions=True
    ),
    "help": teams.help_card,
    "vote_approve": lambda: teams.vote_card(_one_of_two(), _one_of_two().votes[0], people=NAMES),
    "vote_deny_decisive": lambda: teams.vote_card(_denied(), _denied().votes[1], people=NAMES),
    "outcome_approved_with_changes": lambda: teams.outcome_card(
        _approved_with_changes(), people=NAMES
    ),
    "reminder": lambda: teams.reminder_card(_one_of_two(), [BOB, CAROL], people=NAMES),
    "escalation": lambda: teams.escalation_card(_one_of_two(), [CAROL], people=NAMES),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    card = CASES[name]()
    text = json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"teams_{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")
    assert escaping_problems(card, strict_starts=name not in ("list", "list_with_actions")) == []
    assert check(card) == []


def _actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    return list(card.get("actions", []))


def _verbs(card: dict[str, Any]) -> list[str]:
    refresh = card.get("refresh", {}).get("action")
    return [n["verb"] for n in walk(card) if n.get("type") == "Action.Execute" and n is not refresh]


def test_pending_card_votes_with_execute_and_inline_inputs() -> None:
    card = teams.request_card(make(), user_ids=[f"29:{i}" for i in range(80)])
    approve, deny, edit = _actions(card)
    assert (approve["type"], approve["verb"], approve["style"]) == (
        "Action.Execute",
        teams.VERB_APPROVE,
        "positive",
    )
    assert approve["data"] == {"request_id": make().id}
    assert approve["fallback"]["data"] == {"request_id": make().id, "verb": teams.VERB_APPROVE}
    assert (deny["type"], deny["title"]) == ("Action.ShowCard", "Deny")
    (reason,) = deny["card"]["body"]
    assert reason["id"] == teams.INPUT_REASON and reason["isRequired"] is True
    assert reason["isMultiline"] is True and reason["errorMessage"]
    assert deny["card"]["actions"][0]["verb"] == teams.VERB_DENY
    _hint, params, comment = edit["card"]["body"]
    assert (params["id"], comment["id"]) == (teams.INPUT_PARAMS, teams.INPUT_COMMENT)
    assert json.loads(params["value"]) == PARAMS
    assert "isRequired" not in comment
    assert edit["card"]["actions"][0]["verb"] == teams.VERB_EDIT
    assert card["refresh"]["action"]["verb"] == teams.VERB_REFRESH
    assert card["refresh"]["action"]["data"] == {"request_id": make().id}
    assert len(card["refresh"]["userIds"]) == 60
    assert check(card) == []


@pytest.mark.parametrize(
    "request_",
    [_approved(), _denied(), expired(make()), cancelled(make()), decided(make(), Status.APPROVED)],
    ids=["approved", "denied", "expired", "cancelled", "approved-bare"],
)
def test_final_cards_have_no_votes_and_no_refresh(request_: Any) -> None:
    card = teams.request_card(request_, people=NAMES)
    assert _verbs(card) == [] and "refresh" not in card
    assert check(card) == []


def test_details_only_when_needed_and_kept_on_final_cards() -> None:
    assert "Details" not in [a["title"] for a in _actions(teams.request_card(make()))]
    long_value = teams.request_card(make(params={"sql": "select 1 " * 100}))
    details = _actions(long_value)[-1]
    assert details["title"] == "Details" and details["type"] == "Action.ShowCard"
    run = next(n for n in walk(details) if n.get("type") == "TextRun")
    assert json.loads(run["text"]) == {"sql": "select 1 " * 100}
    many = json.dumps(teams.request_card(make(params={f"k{i}": i for i in range(20)})))
    assert "and 8 more: see **Details**" in many
    final = teams.request_card(expired(make(params={"sql": "x" * 500})))
    assert [a["title"] for a in _actions(final)] == ["Details"]


def test_viewer_note_replaces_the_buttons_for_that_viewer() -> None:
    card = teams.request_card(make(), viewer_note="You asked for this: you can't approve it.")
    assert _verbs(card) == [] and "refresh" in card
    assert "\u2139\ufe0f You asked for this: you can't approve it." in json.dumps(
        card, ensure_ascii=False
    )
    voted = teams.request_card(_one_of_two(), viewer="ALICE@example.com ")
    assert _verbs(voted) == []
    assert "You approved this request" in json.dumps(voted)
    other = teams.request_card(_one_of_two(), viewer=BOB)
    assert _verbs(other) == [teams.VERB_APPROVE, teams.VERB_DENY, teams.VERB_EDIT]


def test_progress_names_the_voters_and_dates_render_in_local_time() -> None:
    text = json.dumps(teams.request_card(_one_of_two(), people=NAMES), ensure_ascii=False)
    assert "1 of 2 approvals: Alice" in text
    assert "✅ **Alice** approved" in text and "│ Looks fine, small export." in text
    assert (
        "Expires {{DATE(2026-11-21T10:30:00Z, SHORT)}} {{TIME(2026-11-21T10:30:00Z)}}"
        " · Request req_01JD0000000000000000000000"
    ) in text
    # Without names, people are shown by address.
    assert "1 of 2 approvals: alice@example.com" in json.dumps(teams.request_card(_one_of_two()))


def test_approved_with_changes_shows_the_diff_and_who_decided() -> None:
    text = json.dumps(
        teams.request_card(_approved_with_changes(), people=NAMES), ensure_ascii=False
    )
    assert "✅ Approved with changes by Alice and bob@example.com" in text
    assert "**Changed params (what was approved):**" in text
    assert "• rows: 120000 → 1000" in text


def test_vote_card_counts_and_says_when_it_decided() -> None:
    r = _approved()
    last = json.dumps(teams.vote_card(r, r.votes[-1]), ensure_ascii=False)
    assert "✅ **bob@example.com** approved (2 of 2)" in last
    assert "That decided it: the request is **approved**." in last
    assert "That decided it" not in json.dumps(teams.vote_card(r, r.votes[0]))


@pytest.mark.parametrize("code", [*REFUSALS, "something_new"])
def test_refusal_card_names_the_rule(code: str) -> None:
    card = teams.refusal_card(code, "bob is not an approver of rule 'prod' [x](https://evil)")
    text = json.dumps(card, ensure_ascii=False)
    assert REFUSALS.get(code, "That didn't work.") in text
    assert "](" not in text and "https://" not in text
    assert card["body"][0]["color"] == "attention"
    assert check(card) == [] and escaping_problems(card) == []
    response = teams.invoke_error(code, "nope")
    assert response["statusCode"] == 200
    assert response["type"] == "application/vnd.microsoft.card.adaptive"
    assert response["value"] == teams.refusal_card(code, "nope")


def test_invoke_response_wraps_a_card() -> None:
    card = teams.help_card()
    assert teams.invoke_response(card) == {
        "statusCode": 200,
        "type": "application/vnd.microsoft.card.adaptive",
        "value": card,
    }


def test_help_lists_every_command() -> None:
    text = json.dumps(teams.help_card())
    for command in ("**pending**", "**show** ID", "**history** [status:S]", "**help**"):
        assert command in text


def test_list_is_capped_says_so_and_pages_with_more() -> None:
    requests = [make(request_id=f"req_{i:04d}") for i in range(200)]
    card = teams.request_list_card(
        requests, title="Waiting", more_data={"c": "x"}, with_actions=True
    )
    text = json.dumps(card)
    assert "Showing 25 of 200 requests" in text
    (more,) = _actions(card)
    assert (more["verb"], more["data"]) == (teams.VERB_MORE, {"c": "x"})
    assert more["fallback"]["data"] == {"c": "x", "verb": teams.VERB_MORE}
    assert _verbs(card).count(teams.VERB_APPROVE) == 25
    assert check(card) == []


def test_list_actions_only_for_pending_and_empty_list() -> None:
    card = teams.request_list_card([_approved(), make()], title="Mine", with_actions=True)
    assert _verbs(card) == [teams.VERB_APPROVE, teams.VERB_REFRESH]
    empty = teams.request_list_card([], title="Nothing")
    assert "_Nothing here._" in json.dumps(empty) and check(empty) == []


def test_list_more_data_over_2000_is_refused_not_cut() -> None:
    with pytest.raises(ValueError, match="limit 2000"):
        teams.request_list_card([make()], title="x", more_data={"c": "x" * 2000})


def test_notices_pass_the_checks() -> None:
    for r in (make(), _approved(), _approved_with_changes(), _denied(), expired(make())):
        for card in (
            teams.outcome_card(r, people=NAMES),
            teams.reminder_card(r, [BOB], people=NAMES),
            teams.escalation_card(r, [CAROL, BOB]),
            *(teams.vote_card(r, v) for v in r.votes),
        ):
            assert check(card) == [] and escaping_problems(card) == []


def test_edit_box_is_left_empty_for_params_too_long_to_prefill() -> None:
    card = teams.request_card(make(params={"sql": "x" * 7000}))
    edit = next(a for a in _actions(card) if a["title"] == "Approve with changes")
    hint, params, _comment = edit["card"]["body"]
    assert "value" not in params and params["isRequired"] is True
    assert "too long to copy into this box" in hint["text"]
    assert check(card) == []


def test_refresh_keeps_only_teams_user_ids_at_most_60() -> None:
    ids = ["29:1abc-DEF_x", "8:orgid:0000-1111", "not an id <x>", "29:1abc-DEF_x", "", "x" * 200]
    card = teams.request_card(make(), user_ids=ids)
    assert card["refresh"]["userIds"] == ["29:1abc-DEF_x", "8:orgid:0000-1111"]
