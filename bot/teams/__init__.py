"""Microsoft Teams: botbuilder's ``CloudAdapter`` on our server, and the Teams ``Messenger``.

``POST /api/messages`` takes Bot Framework activities (JWT-checked); the bot
answers universal actions on Adaptive Cards and typed commands; the chat worker
posts and updates cards through ``TeamsMessenger``, so a vote in Slack updates
the Teams cards and the other way round.
"""

from bot.teams.app import TEAMS, TeamsBot, setup_teams
from bot.teams.messenger import TeamsMessenger
from bot.teams.package import manifest, package

__all__ = ["TEAMS", "TeamsBot", "TeamsMessenger", "manifest", "package", "setup_teams"]
