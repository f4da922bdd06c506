"""The port every chat platform implements (Teleport's ``MessagingBot``, drawn for both).

Destinations are platform-neutral strings: ``channel:<name or id>`` (a policy
``notify`` entry) and ``dm:<e-mail>`` (a person, reached by a direct message).
A message id is the platform's handle for a posted message (Slack
``<channel>/<ts>``, Teams ``<conversation>/<activity>``), stored so the card
can be updated for the rest of the request's life.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from countersign.core.model import ApprovalRequest, Vote

__all__ = ["DirectKind", "Messenger", "Unreachable"]

DirectKind = Literal["outcome", "reminder", "escalation"]


class Unreachable(Exception):
    """The destination does not exist on this platform (no such channel, person not a member)."""


class Messenger(Protocol):
    """Posts, updates and replies to request cards on one chat platform."""

    platform: str
    # Whether ``find`` can find a posted card again (then an intent is stored
    # before each post, and a post left in doubt is looked for before posting again).
    finds_cards: bool

    async def post(self, destination: str, request: ApprovalRequest) -> str:
        """Post the request's card; its message id (``Unreachable`` if there is no such place)."""
        ...

    async def find(self, destination: str, request: ApprovalRequest) -> str | None:
        """The message id of the request's card already posted to ``destination``, if any."""
        ...

    async def update(self, message_id: str, request: ApprovalRequest) -> None:
        """Re-render a posted card with the request's current state."""
        ...

    async def reply(
        self,
        message_id: str,
        request: ApprovalRequest,
        *,
        vote: Vote | None = None,
        reminder: Sequence[str] = (),
        escalated: Sequence[str] = (),
    ) -> None:
        """Reply under a posted card: a vote, a reminder naming who is awaited, or an escalation."""
        ...

    async def tell(
        self,
        email: str,
        request: ApprovalRequest,
        kind: DirectKind,
        *,
        people: Sequence[str] = (),
    ) -> str:
        """A direct message to a person; its message id (``Unreachable`` if not on the platform)."""
        ...
