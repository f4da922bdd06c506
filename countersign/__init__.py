"""Countersign: action-level approvals for AI agents, decided by humans in Slack and Teams."""

__version__ = "0.1.0"
