"""How a ranking's scores are shown: as plain scores, or as expected margin changes.

A ranking made with a calibrated ``learned`` model (``LearnedAttribution.calibrate``) records
``score_meaning`` = ``{"unit": "logits", "calibrated": True, ...}`` in its metadata. Its score of
a training image is the image's expected contribution to the target's margin on models the fit
never saw, so removing the image is expected to change the margin by minus the score, and
removing a set by minus the sum of its scores (the model is linear in the set). The pages and
the CLI show those changes, because "the margin drops by 0.4 logits" answers what users ask of
an attribution, where a bare score does not. An uncalibrated ``learned`` model's scores are in
logits too, but overstate the change (a ridge fit on few models fits their noise): they stay
plain scores, marked "uncalibrated". Every other method: plain scores, as before.

Light on purpose (NumPy only), as the CLI imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: The heading of a score shown as a margin change.
MARGIN_HEADING = "expected margin change if removed"
#: The heading of an uncalibrated learned model's scores.
UNCALIBRATED_HEADING = "score (uncalibrated)"


def _meaning(metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (metadata or {}).get("score_meaning") or {}


def shows_margin_change(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a ranking's scores are shown as expected margin changes (calibrated learned)."""
    meaning = _meaning(metadata)
    return meaning.get("unit") == "logits" and bool(meaning.get("calibrated"))


def is_uncalibrated(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a ranking's scores are logits of an uncalibrated learned model."""
    meaning = _meaning(metadata)
    return meaning.get("unit") == "logits" and not meaning.get("calibrated")


def score_heading(metadata: Mapping[str, Any] | None) -> str:
    """The column heading of a ranking's scores."""
    if shows_margin_change(metadata):
        return MARGIN_HEADING
    return UNCALIBRATED_HEADING if is_uncalibrated(metadata) else "score"


def shown_value(metadata: Mapping[str, Any] | None, score: float) -> float:
    """A score as shown: minus the score for a margin change, else the score itself."""
    return -float(score) if shows_margin_change(metadata) else float(score)


def set_change(
    metadata: Mapping[str, Any] | None, scores: np.ndarray, indices: np.ndarray
) -> float | None:
    """The expected margin change for removing every ranked image of one target's list
    (``indices`` ``-1`` are unranked slots), or ``None`` when scores are not margin changes."""
    if not shows_margin_change(metadata):
        return None
    ranked = np.asarray(indices) >= 0
    return -float(np.sum(np.asarray(scores, dtype=np.float64)[ranked]))


def set_note(metadata: Mapping[str, Any] | None, scores: np.ndarray, indices: np.ndarray) -> str:
    """One line on a target's list: the expected margin change for removing it all, the
    mark of uncalibrated scores, or nothing."""
    change = set_change(metadata, scores, indices)
    if change is not None:
        n = int(np.sum(np.asarray(indices) >= 0))
        return f"removing these {n} together: expected margin change {change:+.3f} logits"
    if is_uncalibrated(metadata):
        return "uncalibrated learned scores: too large as margin changes"
    return ""


def legend(metadata: Mapping[str, Any] | None) -> str:
    """How to read a ``learned`` ranking's numbers (empty for other methods)."""
    meaning = _meaning(metadata)
    if shows_margin_change(metadata):
        info = meaning.get("calibration_info") or {}
        slope = info.get("slope", meaning.get("calibration"))
        measured = (
            f" (calibration factor {slope:.3g}, R^2 {info['r2']:.2f}, measured by "
            f"{info['folds']}-fold cross-validation over {info['subsets']} subset models)"
            if isinstance(slope, int | float) and {"r2", "folds", "subsets"} <= set(info)
            else ""
        )
        return (
            "Each number is the expected change of the target's margin, in logits, if that "
            "training image is removed and the model retrained: negative means the image "
            "supports the prediction, positive that it works against it. Removing a set is "
            "expected to change the margin by the sum of its numbers. The learned model's "
            f"scores were calibrated on subset models it was not fitted on{measured}."
        )
    if is_uncalibrated(metadata):
        return (
            "Scores are in logits, uncalibrated: the learned model was not calibrated on "
            "held-out subset models, so its scores overstate margin changes; rank by them, "
            "do not read them as changes (LearnedAttribution.calibrate)."
        )
    return ""


__all__ = [
    "MARGIN_HEADING",
    "UNCALIBRATED_HEADING",
    "is_uncalibrated",
    "legend",
    "score_heading",
    "set_change",
    "set_note",
    "shown_value",
    "shows_margin_change",
]
