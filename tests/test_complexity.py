"""Cyclomatic complexity of the library: no function or method in src/simattr above 25.

A function past 25 independent paths cannot be read or tested path by path, and such functions
only grow; this test keeps the limit from eroding. The entry point every user goes through,
``simattr.attribution.workflow.attribute``, is held to 15. Complexity is radon's (the figure
``radon cc -s`` prints), counted on every function, method and nested function. radon is in
the dev extra; it is imported plainly so that a missing radon fails here rather than skipping
the guard in silence.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

SRC = Path(__file__).resolve().parents[1] / "src" / "simattr"
LIMIT = 25
ATTRIBUTE_LIMIT = 15


def _walk(blocks: list[Function | Class]) -> Iterator[Function]:
    """Every function in radon's blocks: top-level ones, methods, and nested ones at any depth.

    ``cc_visit`` keeps nested functions (closures) and inner classes' methods inside their
    parents, so they are walked explicitly; a class is not a function (its figure sums its
    methods) and is not checked itself.
    """
    for block in blocks:
        if isinstance(block, Class):
            yield from _walk([*block.methods, *block.inner_classes])
        else:
            yield block
            yield from _walk(list(block.closures))


def _complexities(code: str) -> list[tuple[str, int, int]]:
    """``(qualified name, line, complexity)`` of every function in ``code``, each once.

    ``cc_visit`` lists a method both alone and inside its class; the walk meets it twice.
    """
    seen: set[tuple[str, int, int]] = set()
    out = []
    for f in _walk(cc_visit(code)):
        key = (f.name, f.lineno, f.col_offset)
        if key not in seen:
            seen.add(key)
            out.append((f.fullname, f.lineno, f.complexity))
    return out


def _branches(n: int, indent: int) -> str:
    """``n`` if-statements, a function body of complexity ``n + 1``."""
    body = "".join(f"if x == {i}:\n    x += 1\n" for i in range(n)) + "return x\n"
    return textwrap.indent(body, " " * indent)


def test_the_walk_finds_methods_nested_functions_and_inner_classes_once():
    """The collector is not vacuous: a complex closure, method and inner-class method are found,
    each once, with radon's figure."""
    code = (
        "def outer(x):\n    def inner(x):\n"
        + _branches(LIMIT, 8)
        + "    return inner(x)\n"
        + "class A:\n    def method(self, x):\n"
        + _branches(LIMIT, 8)
        + "    class B:\n        def deep(self, x):\n"
        + _branches(LIMIT, 12)
    )
    found = _complexities(code)
    names = [name for name, _, _ in found]
    assert sorted(names) == sorted(set(names))
    cc = {name: value for name, _, value in found}
    assert cc["outer"] == 1  # a closure's branches are its own, not its parent's
    assert cc["inner"] == cc["A.method"] == cc["B.deep"] == LIMIT + 1


def test_no_function_in_src_exceeds_the_limit():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20, f"only {len(files)} source files under {SRC}"
    checked = 0
    offenders = []
    for path in files:
        for name, line, cc in _complexities(path.read_text(encoding="utf-8")):
            checked += 1
            if cc > LIMIT:
                offenders.append(f"{path.relative_to(SRC.parents[1])}:{line} {name} ({cc})")
    assert checked > 200, f"only {checked} functions found under {SRC}"
    assert not offenders, (
        f"{len(offenders)} functions above cyclomatic complexity {LIMIT}; split them into named "
        "steps:\n" + "\n".join(offenders)
    )


def test_attribute_stays_simple():
    path = SRC / "attribution" / "workflow.py"
    found = [
        (line, cc)
        for name, line, cc in _complexities(path.read_text(encoding="utf-8"))
        if name == "attribute"
    ]
    assert len(found) == 1, f"expected one top-level attribute() in {path}, found {found}"
    line, cc = found[0]
    assert cc <= ATTRIBUTE_LIMIT, (
        f"src/simattr/attribution/workflow.py:{line} attribute has complexity {cc}, "
        f"above {ATTRIBUTE_LIMIT}"
    )
