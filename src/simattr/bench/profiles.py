"""The sizes of a benchmark run (:class:`Profile`), the named profiles and the stage names.

A profile fixes everything that makes two bench tables comparable: recipe, number of targets,
models per search, search budget, k, ensemble size and the LDS design. The committed results
name their profile, so a profile's numbers change only with a new name.
"""

from __future__ import annotations

from dataclasses import dataclass

from simattr.report.bench import LDS_RANKINGS, REFERENCE_METHOD


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run.

    ``targets`` (correctly classified test images) get the support searches; LDS, which costs
    the same whatever the number of targets, is measured on ``lds_targets`` random test images
    (its mean over a handful of targets would be mostly noise).
    """

    name: str
    recipe: str
    targets: int
    models: int
    budget: int
    k: int
    ensemble: int
    lds_subsets: int
    lds_targets: int
    trak_checkpoints: int
    backbone: str = "default"
    device: str = "cpu"
    #: second-seed LDS models on the first subsets: the noise ceiling of LDS
    lds_replicates: int = 0
    #: draw the targets evenly over classes (the margin benchmark's draw, so that the support
    #: searches of this profile run on a subset of its targets and pair with them)
    balanced_targets: bool = False


PROFILES: dict[str, Profile] = {
    # cpu-mini: 1,000 images per class, ~25 s per model on one core; k = half a class.
    "cpu": Profile(
        "cpu",
        "cpu-mini",
        targets=10,
        models=3,
        budget=5,
        k=500,
        ensemble=5,
        lds_subsets=40,
        lds_targets=500,
        trak_checkpoints=2,
        # pinned: the committed results were made with these weights, whatever the default is
        backbone="shipped:cifar10-moco-resnet18-w16-e40",
        lds_replicates=20,
    ),
    # The evidence profile: k = a quarter of a 1,000-image class pool, B = 4 resolves the support
    # to 250 / 16 = 16 images (1.6 % of the class), 50 balanced targets (the first half of the
    # margin benchmark's 100). About 12 models per search: 12.5 CPU-hours for esvm, l2-raw and
    # random, so it is run over several sessions (it resumes).
    "cpu-k250": Profile(
        "cpu-k250",
        "cpu-mini",
        targets=50,
        models=3,
        budget=4,
        k=250,
        ensemble=5,
        lds_subsets=40,
        lds_targets=500,
        trak_checkpoints=2,
        backbone="shipped:cifar10-moco-resnet18-w16-e40",
        lds_replicates=20,
        balanced_targets=True,
    ),
    # The paper's sizes (DESIGN.md section 2) with the fast recipe, for a GPU.
    "gpu": Profile(
        "gpu",
        "fast",
        targets=100,
        models=5,
        budget=7,
        k=1280,
        ensemble=10,
        lds_subsets=100,
        lds_targets=1000,
        trak_checkpoints=10,
        device="cuda",
        lds_replicates=20,
    ),
    # Seconds, for tests.
    "tiny": Profile(
        "tiny",
        "tiny",
        targets=2,
        models=1,
        budget=1,
        k=16,
        ensemble=2,
        lds_subsets=4,
        lds_targets=6,
        trak_checkpoints=1,
        lds_replicates=3,
    ),
}

STAGES = ("remove", "lds", "mislabel")
#: Stands for the profile's self-supervised backbone (``Profile.backbone``) in the methods.
PROFILE_BACKBONE = "profile"

__all__ = [
    "LDS_RANKINGS",
    "PROFILES",
    "PROFILE_BACKBONE",
    "REFERENCE_METHOD",
    "STAGES",
    "Profile",
]
