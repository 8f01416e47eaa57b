"""`plat doctor` on this very host: table and JSON agree, exit code follows failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from plat.commands import doctor


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    doctor.register(app)

    @app.callback()
    def _root() -> None:
        """Keeps `doctor` a sub-command, as in the real CLI."""

    return app


def test_doctor_json_and_table(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--json"])
    data = json.loads(result.stdout)
    names = [check["name"] for check in data["checks"]]
    assert {
        "container engine",
        "buildah",
        "OCI runtime",
        "default ulimits",
        "PLAT_HOME",
        "daemon",
    } <= set(names)
    failing = [c for c in data["checks"] if c["ok"] is False]
    assert data["ok"] is (not failing)
    assert result.exit_code == (1 if failing else 0)
    assert data["facts"]["plat_home"] == str(tmp_path / "home")
    daemon = next(c for c in data["checks"] if c["name"] == "daemon")
    assert daemon["ok"] is None and "not running" in daemon["detail"]

    table = runner.invoke(app, ["doctor"])
    assert table.exit_code == result.exit_code
    for name in names:
        assert name in table.stdout


@pytest.mark.container
def test_doctor_passes_on_a_set_up_host(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After scripts/setup.sh this host has everything plat needs."""
    monkeypatch.setenv("PLAT_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["doctor", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0, [c for c in data["checks"] if c["ok"] is False]
