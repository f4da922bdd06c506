"""app.json, Procfile and Dockerfile say what the code does."""

from __future__ import annotations

import json
from pathlib import Path

from countersign.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _settings_variables() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias])
        names.update(str(c) for c in choices if c)
    return names


def test_app_json_describes_every_setting_and_runs_postgres() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    documented = set(app["env"])
    # DATABASE_URL comes from the PostgreSQL add-on; the rest must be described.
    missing = (
        _settings_variables()
        - documented
        - {"DATABASE_URL", "COUNTERSIGN_DATABASE_URL", "TEAMS_ALLOW_UNAUTHENTICATED"}
    )
    assert not missing, f"app.json does not describe {sorted(missing)}"
    assert not documented - _settings_variables(), "app.json describes variables the code ignores"
    assert any("postgresql" in a["plan"] for a in app["addons"])
    assert app["env"]["COUNTERSIGN_SECRET_KEY"]["generator"] == "secret"


def test_web_process_serves_on_port() -> None:
    assert (
        ROOT / "Procfile"
    ).read_text().strip() == "web: countersign serve --host 0.0.0.0 --port $PORT"
    docker = (ROOT / "Dockerfile").read_text()
    assert "countersign serve --host 0.0.0.0 --port ${PORT:-8080}" in docker
    assert "USER countersign" in docker
