"""The platform-neutral view: readable params, truncation, quorum, people."""

from __future__ import annotations

import json

from cards.view import MAX_VALUE_CHARS, Item, request_view
from countersign.core import Status
from tests.cards.factory import PARAMS, PEOPLE, decided, make, vote


def test_params_are_readable_items() -> None:
    v = request_view(make(params={"table": "t", "cols": ["a", "b"], "q": {"x": 1}, "n": None}))
    assert v.params == (
        Item("table", "t"),
        Item("cols", '["a", "b"]'),
        Item("q", '{"x": 1}'),
        Item("n", "null"),
    )
    assert not v.truncated
    assert not v.needs_details


def test_long_values_are_cut_and_flagged() -> None:
    v = request_view(make(params={"sql": "x" * 10_000}))
    (item,) = v.params
    assert item.truncated and len(item.value) == MAX_VALUE_CHARS and item.value.endswith("…")
    assert v.truncated and v.needs_details
    assert json.loads(v.params_json) == {"sql": "x" * 10_000}


def test_many_params_need_details_without_truncation() -> None:
    v = request_view(make(params={f"k{i}": i for i in range(13)}))
    assert not v.truncated
    assert v.needs_details


def test_quorum_counts_the_leading_params_and_names_people() -> None:
    r = vote(make(quorum=3), "alice@example.com", "approve")
    r = vote(r, "bob@example.com", "approve", edit={**PARAMS, "rows": 5}, minutes=2)
    r = vote(r, "carol@example.com", "approve", minutes=3)
    v = request_view(r, people=PEOPLE)
    assert (v.quorum.approvals, v.quorum.required) == (2, 3)
    assert [p.email for p in v.quorum.approvers] == ["alice@example.com", "carol@example.com"]
    assert v.quorum.approvers[0].user_id == "U0ALICE"
    assert v.quorum.approvers[1].user_id is None
    bob = v.voters[1]
    assert bob.edited and [(c.key, c.before, c.after) for c in bob.changes] == [
        ("rows", "120000", "5")
    ]


def test_final_state_carries_decision_and_moments() -> None:
    r = vote(make(quorum=1), "alice@example.com", "approve", edit={"table": "t"}, comment="ok")
    v = request_view(r, people=PEOPLE)
    assert v.status is Status.APPROVED and v.approved_with_changes
    assert v.decided is not None and v.decided.unix == v.created.unix + 60
    assert v.decided.iso == "2026-11-21T10:01:00.000Z"
    assert [p.user_id for p in v.decided_by] == ["U0ALICE"]
    assert v.decision_reason == "ok"
    assert v.edited_params is not None
    changed = {c.key: (c.before, c.after) for c in v.edited_params}
    assert changed == {
        "table": ("customers", "t"),
        "columns": ('["id", "plan"]', None),
        "rows": ("120000", None),
    }


def test_invisible_characters_are_visible_in_the_details_json() -> None:
    v = request_view(make(params={"cmd": "ls \u202e/ fr- mr"}))
    assert "\\u202e" in v.params_json
    assert json.loads(v.params_json) == {"cmd": "ls \u202e/ fr- mr"}


def test_no_requester() -> None:
    v = request_view(decided(make(requested_by=None), Status.CANCELLED))
    assert v.requested_by is None
    assert not v.is_pending
