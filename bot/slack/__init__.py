"""Slack: bolt's ``AsyncApp`` on our aiohttp server, and the Slack ``Messenger``.

``POST /slack/events`` takes interactivity and the ``/countersign`` slash
command (one Request URL). Listeners parse, call ``ApprovalService`` and
answer; the cards come from ``cards.slack``; the chat worker posts and
updates them through ``SlackMessenger``.
"""

from bot.slack.app import SLACK, SlackBot, setup_slack
from bot.slack.manifest import manifest
from bot.slack.messenger import SlackMessenger

__all__ = ["SLACK", "SlackBot", "SlackMessenger", "manifest", "setup_slack"]
