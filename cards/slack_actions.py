"""The ids Slack hands back to us (action, callback, block ids) and the card's buttons.

The Slack adapter matches clicks and submissions on these names; they are
part of what a posted card means, so they change only with a migration of
the cards already in channels.
"""

from __future__ import annotations

from cards.blockkit import Block, actions, button, confirm

__all__ = [
    "ACTION_APPROVE",
    "ACTION_COMMENT",
    "ACTION_DENY",
    "ACTION_DETAILS",
    "ACTION_EDIT",
    "ACTION_MORE",
    "ACTION_PARAMS",
    "ACTION_REASON",
    "BLOCK_ACTIONS",
    "BLOCK_COMMENT",
    "BLOCK_LIST_PREFIX",
    "BLOCK_MORE",
    "BLOCK_PARAMS",
    "BLOCK_REASON",
    "CALLBACK_APPROVE",
    "CALLBACK_DENY",
    "CALLBACK_EDIT",
    "details_button",
    "request_buttons",
]

ACTION_APPROVE = "countersign.approve"
ACTION_DENY = "countersign.deny"
ACTION_EDIT = "countersign.edit"
ACTION_DETAILS = "countersign.details"
ACTION_MORE = "countersign.more"

CALLBACK_APPROVE = "countersign.approve"
CALLBACK_DENY = "countersign.deny"
CALLBACK_EDIT = "countersign.edit"

BLOCK_ACTIONS = "countersign.actions"
BLOCK_MORE = "countersign.more"
# One actions block per listed request: "countersign.list.0", ".1", ... (unique per message).
BLOCK_LIST_PREFIX = "countersign.list."

# Modal inputs: the action id of each input equals its block id.
BLOCK_REASON = ACTION_REASON = "reason"
BLOCK_PARAMS = ACTION_PARAMS = "params"
BLOCK_COMMENT = ACTION_COMMENT = "comment"


def request_buttons(
    request_id: str, *, details: bool, edit: bool = True, block_id: str = BLOCK_ACTIONS
) -> Block:
    """Approve / Deny / Approve with changes / Details for one pending request."""
    buttons = [
        button("Approve", ACTION_APPROVE, request_id, style="primary"),
        button(
            "Deny",
            ACTION_DENY,
            request_id,
            style="danger",
            confirm_dialog=confirm(
                "Deny this request?",
                "You will be asked for a reason; the requester sees it.",
                "Deny",
                "Cancel",
            ),
        ),
    ]
    if edit:
        buttons.append(button("Approve with changes", ACTION_EDIT, request_id))
    if details:
        buttons.append(button("Details", ACTION_DETAILS, request_id))
    return actions(buttons, block_id=block_id)


def details_button(request_id: str, *, block_id: str = BLOCK_ACTIONS) -> Block:
    """Only the Details button: a decided request whose params did not fit its card."""
    return actions([button("Details", ACTION_DETAILS, request_id)], block_id=block_id)
