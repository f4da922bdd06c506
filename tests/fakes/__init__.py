"""In-process fakes of external services (Slack) for tests and bench scripts."""
