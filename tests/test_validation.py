"""Argument checks of ``simattr.validation`` that no workflow test reaches on its own."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.errors import InvalidInputError
from simattr.validation import check_threads


def test_check_threads_accepts_none_and_positive_ints_and_names_the_option():
    """``None`` keeps torch's default; anything but an integer >= 1 is refused by the name the
    caller gives (``threads`` when it gives none)."""
    assert check_threads(None) is None
    assert check_threads(np.int64(3)) == 3
    with pytest.raises(InvalidInputError, match=r"^threads must be a positive integer, got 0"):
        check_threads(0)
    with pytest.raises(InvalidInputError, match=r"^--threads must be a positive integer"):
        check_threads(True, "--threads")
