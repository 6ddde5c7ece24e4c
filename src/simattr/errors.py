"""One exception family for everything simattr refuses.

Every error names the file, row, value or argument at fault and says how to fix it. The
subclasses also derive from the built-in exception a Python user would expect (``ValueError``
for bad values, ``FileNotFoundError`` for missing files), so generic ``except`` clauses keep
working, while ``except SimattrError`` catches all of ours and only ours.
"""

from __future__ import annotations


class SimattrError(Exception):
    """Base class of every error raised on purpose by simattr."""


class InvalidInputError(SimattrError, ValueError):
    """An argument or array has the wrong shape, type, range or value (NaN, k too large, ...)."""


class DataError(SimattrError, ValueError):
    """A dataset source is malformed: corrupt image, inconsistent labels, unknown layout."""


class MissingFileError(SimattrError, FileNotFoundError):
    """A file or directory that the caller named does not exist."""


class CheckpointError(SimattrError, ValueError):
    """A weights file is not what it claims to be (wrong architecture, unsafe pickle, ...)."""


class DamagedFileError(SimattrError, ValueError):
    """A file's bytes are not what was written: a checksum mismatch, a torn archive, bad JSON."""


class LockedError(SimattrError, RuntimeError):
    """Another live run holds the lock of the output this run would write."""
