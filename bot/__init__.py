"""Chat adapters: Slack (slack-bolt) and Microsoft Teams (botbuilder).

Both are adapters of one notifier port (post a card, update every card of a
request, tell a user, resolve a user to an e-mail address) and call the same
``countersign.service.ApprovalService``. They arrive with issues 4 and 5.
"""
