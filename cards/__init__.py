"""Cards are data: one view of a request rendered as Block Kit (and later Adaptive Card) JSON.

``cards.view`` builds the platform-neutral ``RequestView``; ``cards.slack`` turns
it into Slack messages and modals from the Jinja2 templates in
``templates/slack/``, every untrusted value escaped by ``cards.escape`` and
every Block Kit limit kept by ``cards.blockkit``. Pure functions, no I/O.
"""
