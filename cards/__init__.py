"""Cards are data: one view of a request rendered as Block Kit and Adaptive Card JSON.

The Jinja2 templates and the per-platform escaping filters arrive with the
Slack and Teams adapters (issues 4 and 5).
"""
