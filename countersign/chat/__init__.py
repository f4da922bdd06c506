"""Chat, platform-neutral: the messenger port and the worker that keeps every card true.

Slack (``bot.slack``) and Teams implement one ``Messenger`` port; the
``ChatWorker`` drives them from durable chat jobs (``storage.chat``), so a
request's cards are posted, updated, replied to and followed up the same way
on every platform.
"""

from countersign.chat.ports import Messenger, Unreachable
from countersign.chat.worker import ChatWorker, destinations

__all__ = ["ChatWorker", "Messenger", "Unreachable", "destinations"]
