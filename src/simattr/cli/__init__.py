"""The ``simattr`` command line: a thin layer over the Python API.

One module per command group registers its commands on the shared app
(:mod:`simattr.cli._common`): :mod:`~simattr.cli.attribution` (``features``, ``attribute``,
``demo``), :mod:`~simattr.cli.ssl` (``train-ssl``) and :mod:`~simattr.cli.evaluation`
(``support``, ``support-report``, ``lds``, ``lds-score``, ``bench``, ``recipes``). Each command
parses its options, calls the API and prints a short summary. Every refusal from the API (a
:class:`~simattr.errors.SimattrError`) becomes one red line on stderr and exit code 1; outputs
are written atomically, so a failed command leaves no file behind.
"""

from __future__ import annotations

from simattr.cli import attribution as _attribution  # noqa: F401  (registers commands)
from simattr.cli import audit as _audit  # noqa: F401
from simattr.cli import evaluation as _evaluation  # noqa: F401
from simattr.cli import report as _report  # noqa: F401
from simattr.cli import ssl as _ssl  # noqa: F401
from simattr.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``simattr`` script."""
    app()


if __name__ == "__main__":
    main()
