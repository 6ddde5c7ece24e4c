"""The application (:mod:`simattr.cli`): its command list and its version option."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

import simattr

runner = CliRunner()
WIDE = {"COLUMNS": "240"}  # rich tables and help fold long cells at the default 80 columns


def test_help_lists_every_registered_command():
    from simattr.cli import app

    names = sorted(typer.main.get_command(app).commands)
    assert {"attribute", "bench", "recipes", "support"} <= set(names)
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.output, name


def test_version_option():
    from simattr.cli import app

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"simattr {simattr.__version__}"
