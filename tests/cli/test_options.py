"""One option vocabulary: a name means one thing in every command.

The test walks the command tree. An option that two or more commands take must be declared once,
in :mod:`simattr.cli._common` (its help is then the same text everywhere), with one type, one
flag-ness, one spelling and one default; what it does in one command alone is said in that
command's description. The one freedom: an option whose default is ``None`` ("not given") may be
required by a command that cannot run without it (``--out``, ``--data``).
"""

from __future__ import annotations

import typing
from collections import defaultdict

import pytest
import typer
from typer.main import get_command

from simattr.cli import _common, app


def _options(typer_app: typer.Typer) -> dict[str, list[tuple[str, typing.Any]]]:
    """Option name -> (command, option) for every option taken by two or more commands."""
    found: dict[str, list] = defaultdict(list)
    for command_name, command in sorted(get_command(typer_app).commands.items()):  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option":
                found[param.name].append((command_name, param))
    return {name: uses for name, uses in found.items() if len(uses) > 1}


def _shared_helps() -> set[str]:
    """The help texts of the option aliases declared in ``_common``."""
    helps = set()
    for value in vars(_common).values():
        if typing.get_origin(value) is typing.Annotated:
            for info in value.__metadata__:
                if isinstance(info, typer.models.OptionInfo) and info.help:
                    helps.add(info.help)
    return helps


def _describe(param) -> dict[str, object]:
    return {
        "opts": tuple(param.opts),
        "secondary_opts": tuple(param.secondary_opts),
        "type": param.bare_type(),
        "is_flag": param.is_flag,
        "multiple": param.multiple,
        "help": param.help,
    }


def _problems(name: str, uses: list[tuple[str, typing.Any]]) -> list[str]:
    """What is wrong with the option ``name`` across the commands that take it."""
    flag = "--" + name.replace("_", "-")
    problems = []
    first_command, first = uses[0]
    for command, param in uses[1:]:
        for key, value in _describe(param).items():
            if value != _describe(first)[key]:
                problems.append(f"{flag}: {key} differs between {first_command} and {command}")
    defaults = {command: param.default for command, param in uses if not param.required}
    if len({repr(d) for d in defaults.values()}) > 1:
        problems.append(f"{flag}: defaults differ {defaults}")
    if any(param.required for _, param in uses) and set(defaults.values()) - {None}:
        problems.append(f"{flag}: required somewhere, defaults {defaults} elsewhere")
    helps = _shared_helps()
    problems += [
        f"{flag}: {command} declares it itself; use its alias in simattr.cli._common"
        for command, param in uses
        if param.help not in helps
    ]
    return problems


SHARED = _options(app)


def test_the_walk_finds_the_shared_options() -> None:
    # a broken walk must not pass by finding nothing
    assert {"data", "out", "topk", "targets", "seed", "device", "html", "csv"} <= set(SHARED)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_an_option_of_several_commands_has_one_type_default_and_meaning(name: str) -> None:
    assert _problems(name, SHARED[name]) == []


def test_the_walk_catches_each_kind_of_conflict() -> None:
    local = typer.Typer()

    @local.command()
    def one(
        topk: _common.TopkOption = 10,
        html: _common.HtmlOption = None,
        seed: _common.SeedOption = 0,
        out: _common.OutOption = ...,  # type: ignore[assignment]
    ) -> None:
        """One."""

    @local.command()
    def two(
        topk: _common.TopkOption = 8,  # another default
        html: typing.Annotated[bool, typer.Option("--html", help="A flag.")] = False,
        seed: typing.Annotated[int, typer.Option(help="Its own words.")] = 0,
        out: _common.OptionalOutOption = None,  # required in one, None here: allowed
    ) -> None:
        """Two."""

    found = _options(local)
    assert _problems("out", found["out"]) == []
    assert any("defaults differ" in p for p in _problems("topk", found["topk"]))
    html = _problems("html", found["html"])
    assert any("type" in p for p in html) and any("is_flag" in p for p in html)
    assert any("declares it itself" in p for p in _problems("seed", found["seed"]))
