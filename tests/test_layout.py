"""The tests mirror the source tree: a test file says by its place which module it tests.

``tests/test_<module>.py`` tests ``src/simattr/<module>.py``; ``tests/<package>/test_<module>.py``
tests ``src/simattr/<package>/<module>.py`` (or the subpackage ``<module>/``). Leading and
trailing underscores are dropped (``_io.py`` -> ``test_io.py``, ``__init__.py`` ->
``test_init.py``, ``__main__.py`` -> ``test_main.py``). Tests that check no one module live in a
folder that says what they are (``CROSS_CUTTING``); any other file that mirrors nothing is an
exception listed here with its reason. See tests/README.md for the whole table.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "simattr"

#: Folders of tests that check no single module, and what they hold.
CROSS_CUTTING = {
    "contracts": "contracts every registered plug-in keeps, and checks against independent "
    "references (scikit-learn, scipy, brute force) across modules",
    "faults": "the fault corpus: bad inputs, kills and leftovers, command by command",
    "e2e": "end-to-end walk-throughs of a user's path through several commands",
    "project": "the repository beyond src/: docs, committed results, benchmark scripts, the "
    "test helpers and the AVX2-held test run",
}

#: Test files that mirror no module, each with the reason it sits where it does.
EXCEPTIONS = {
    "test_layout.py": "this check itself, over the whole tests/ tree",
    "test_complexity.py": "a guard over every function of src/ (radon); belongs in project/, "
    "left at the top level while its author's work on it settles",
    "cli/test_options.py": "walks every command of the tree: one option vocabulary",
    "cli/test_startup.py": "every command's --help and usage errors, each in a fresh interpreter",
    "cli/test_command_size.py": "walks every command: bodies of 30 lines or fewer",
    "report/test_degenerate_inputs.py": "every report writer fed the same degenerate inputs",
}


def _stem(name: str) -> str:
    return name.removesuffix(".py").strip("_")


def _mirrors(rel: Path) -> bool:
    """Whether ``rel`` (relative to tests/) names a module or subpackage of src/simattr."""
    *folders, name = rel.parts
    tested = name.removeprefix("test_").removesuffix(".py")
    where = SRC.joinpath(*folders)
    if not (where / "__init__.py").is_file():
        return False
    modules = {_stem(p.name) for p in where.glob("*.py")}
    packages = {p.name for p in where.iterdir() if (p / "__init__.py").is_file()}
    return tested in modules or tested in packages


def _test_files() -> list[Path]:
    return sorted(
        p.relative_to(TESTS) for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts
    )


def test_every_test_file_mirrors_a_module_or_says_why_not():
    misplaced = [
        rel.as_posix()
        for rel in _test_files()
        if rel.parts[0] not in CROSS_CUTTING
        and rel.as_posix() not in EXCEPTIONS
        and not _mirrors(rel)
    ]
    assert not misplaced, (
        "test files that mirror no module of src/simattr (move them to tests/<package>/"
        "test_<module>.py, or list them in EXCEPTIONS with a reason): " + ", ".join(misplaced)
    )


def test_every_exception_and_folder_is_still_there():
    """A stale exception would let a new file of the same name in unchecked."""
    files = {rel.as_posix() for rel in _test_files()}
    assert not set(EXCEPTIONS) - files, sorted(set(EXCEPTIONS) - files)
    assert all((TESTS / folder).is_dir() for folder in CROSS_CUTTING)


def test_the_rule_refuses_a_file_named_after_its_origin():
    """The check itself: catch-all names and wrong folders mirror nothing; real modules do."""
    assert _mirrors(Path("test_io.py")) and _mirrors(Path("test_main.py"))
    assert _mirrors(Path("attribution/test_esvm.py")) and _mirrors(Path("cli/test_init.py"))
    assert _mirrors(Path("data/test_sources.py"))  # a subpackage
    assert not _mirrors(Path("test_without_data.py"))
    assert not _mirrors(Path("evaluation/test_esvm.py"))  # esvm lives in attribution/
    assert not _mirrors(Path("nowhere/test_io.py"))
