"""The default backbone is described from its weights' sidecar alone, and the docs agree.

The demo once printed "100 epochs, kNN 0.664" for the backbone the README called "140 epochs,
0.665": the sidecar held the epochs of the last run only. Now the demo's line is built from the
sidecar (warm-start epochs included) and every place in README.md, docs/ and the weights' own
README that states the default backbone's epochs and kNN accuracy must say the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simattr.demo import _describe

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "simattr" / "weights"
DEFAULT = "cifar10-moco-resnet18-w16-e140"


def _sidecar() -> dict:
    return json.loads((WEIGHTS / f"{DEFAULT}.safetensors.json").read_text(encoding="utf-8"))


def test_demo_line_counts_every_epoch_and_the_recorded_accuracy() -> None:
    from simattr.models import load_backbone

    meta = _sidecar()
    line = _describe(load_backbone("default"))
    total = meta["epochs"] + meta.get("prior_epochs", 0)
    assert f"{total} epochs" in line
    assert f"kNN accuracy {meta['knn_accuracy']:.4f}" in line
    assert meta["kind"] == "backbone"


def _docs() -> list[Path]:
    return [ROOT / "README.md", WEIGHTS / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


#: "140 epochs, kNN accuracy 0.665" and the like, within one sentence.
_CLAIM = re.compile(r"(\d+) epochs[^.\n]{0,40}?kNN(?: accuracy)? (0\.\d+)")


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_state_the_default_backbone_as_its_sidecar_does(doc: Path) -> None:
    if not doc.exists():
        pytest.skip(f"{doc.name} does not exist")
    meta = _sidecar()
    total = meta["epochs"] + meta.get("prior_epochs", 0)
    for match in _CLAIM.finditer(doc.read_text(encoding="utf-8")):
        epochs, accuracy = int(match.group(1)), match.group(2)
        if epochs != total:
            continue  # another backbone (the 40-epoch one) or another run
        digits = len(accuracy) - 2
        assert float(accuracy) == pytest.approx(
            meta["knn_accuracy"], abs=0.5 * 10**-digits + 1e-9
        ), (
            f"{doc.name}: {match.group(0)!r} disagrees with the sidecar's kNN accuracy "
            f"{meta['knn_accuracy']}"
        )
