"""``python -m countersign`` runs the command line."""

from countersign.cli import entry

entry()
