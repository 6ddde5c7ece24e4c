"""Command bodies stay short: the CLI parses options, calls the API and prints.

A command registered with ``@app.command`` may hold at most 30 lines of body (the signature and
the docstring aside); longer logic belongs in the API (``simattr.attribution``,
``simattr.evaluation``, ``simattr.report``, ``simattr.audit``), where scripts can use it too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import simattr.cli

LIMIT = 30
CLI = Path(simattr.cli.__file__).parent


def _is_command(decorator: ast.expr) -> bool:
    call = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(call, ast.Attribute) and call.attr == "command"


def body_lines(func: ast.FunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def commands() -> dict[str, int]:
    """``file:function`` -> body lines, for every function registered with ``@app.command``."""
    found = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(map(_is_command, node.decorator_list)):
                found[f"{path.name}:{node.name}"] = body_lines(node)
    return found


def test_every_command_body_is_at_most_30_lines() -> None:
    found = commands()
    assert len(found) >= 14, sorted(found)  # the walk sees every command
    too_long = {name: n for name, n in found.items() if n > LIMIT}
    assert too_long == {}, f"command bodies above {LIMIT} lines: {too_long}"


def test_the_count_skips_the_docstring_and_counts_the_rest() -> None:
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n\n    return (\n        a\n    )\n'
    func = ast.parse(source).body[0]
    assert isinstance(func, ast.FunctionDef)
    assert body_lines(func) == 5
