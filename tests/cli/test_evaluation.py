"""Evaluation commands (:mod:`simattr.cli.evaluation`) that need no data: ``recipes`` and
``bench``'s refusals."""

from __future__ import annotations

from digitskit import digits_recipe
from typer.testing import CliRunner

from simattr.training.recipes import RECIPES

runner = CliRunner()
WIDE = {"COLUMNS": "240"}  # rich tables and help fold long cells at the default 80 columns


def test_recipes_command_lists_every_registered_recipe(monkeypatch):
    from simattr.cli import app

    extra = digits_recipe(name="contract-only-recipe", description="registered by a test")
    monkeypatch.setitem(RECIPES, extra.name, extra)
    result = runner.invoke(app, ["recipes"], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, recipe in RECIPES.items():
        row = [line for line in lines if f" {name} " in line]
        assert row, f"recipe {name!r} is not listed"
        assert recipe.arch in row[0] and f" {recipe.epochs} " in row[0]


def test_bench_command_refuses_an_unknown_profile_in_one_line():
    from simattr.cli import app

    result = runner.invoke(app, ["bench", "--data", "digits", "--profile", "huge"])
    assert result.exit_code == 1
    assert "unknown profile 'huge'" in result.output
    assert "Traceback" not in result.output
