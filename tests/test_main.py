"""``python -m simattr`` (:mod:`simattr.__main__`) and the version it prints."""

from __future__ import annotations

import os
import subprocess
import sys

import simattr


def test_python_dash_m_simattr_runs_the_cli_and_prints_the_version():
    from importlib.metadata import version

    env = {k: v for k, v in os.environ.items() if k != "SIMATTR_DATA_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-m", "simattr", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"simattr {simattr.__version__}"
    # the version in the code is the one the installed distribution declares (pyproject)
    assert simattr.__version__ == version("simattr")
