"""Helpers for tests that drive the command line on a user's own folder of images."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from simattr.cli import app

runner = CliRunner()


def invoke(*args: object) -> Result:
    """``simattr ARGS`` in-process (paths and numbers given as they are)."""
    return runner.invoke(app, [str(a) for a in args])


def embed_folder(root: Path, out: Path) -> tuple[Path, Path]:
    """``simattr features`` of both splits of a folder dataset with a fixed random backbone."""
    paths = []
    for split in ("train", "test"):
        path = out / f"{split}.npy"
        result = invoke(
            "features", "--data", root, "--split", split, "--backbone", "random:0", "--out", path
        )
        assert result.exit_code == 0, result.output
        paths.append(path)
    return paths[0], paths[1]
