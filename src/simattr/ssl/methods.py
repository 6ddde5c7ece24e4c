"""Self-supervised methods (MoCo v2, SimCLR, BYOL) behind one small interface.

Each method is an :class:`torch.nn.Module` holding the backbone being trained and whatever else
the method needs (projection heads, momentum copies, a queue of negatives). The trainer only
ever calls :meth:`SSLMethod.training_step` with two augmented views of the same batch and gets a
scalar loss back; momentum updates happen inside the step, so a trainer cannot forget them or
apply them in the wrong order.

The building blocks come from lightly (projection heads, ``NTXentLoss`` and its memory bank,
``update_momentum``, ``cosine_schedule``). Lightly keeps the MoCo queue in *non-persistent*
buffers, which ``state_dict`` leaves out; :class:`MoCo` adds it back through
``get_extra_state``, because a resumed run without the exact queue would not reproduce the
uninterrupted one.

Head sizes and temperatures follow the CIFAR-10 settings of the MoCo v2 CIFAR demo and of
lightly's CIFAR-10 benchmarks (512-d hidden layers, 128-d MoCo/SimCLR outputs, 4,096 negatives,
temperature 0.1 for MoCo and 0.5 for SimCLR).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from simattr.errors import InvalidInputError
from simattr.models.resnet import CifarResNet

#: Names accepted by :func:`build_method`.
METHODS = ("moco", "simclr", "byol")
#: InfoNCE temperature used when none is given.
DEFAULT_TEMPERATURE = {"moco": 0.1, "simclr": 0.5}


class SSLMethod(nn.Module):
    """Common interface: ``.backbone`` (the network we keep) and ``training_step``."""

    name: str = ""
    backbone: CifarResNet

    def training_step(
        self, view_a: torch.Tensor, view_b: torch.Tensor, *, step: int = 0, total_steps: int = 1
    ) -> torch.Tensor:
        """Loss of one batch seen as two views; ``step``/``total_steps`` drive schedules."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Hyper-parameters that define this method (recorded in checkpoints and sidecars)."""
        return {"method": self.name}


def _momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy, updated only by exponential moving average."""
    clone = copy.deepcopy(module)
    deactivate_requires_grad(clone)
    return clone


class MoCo(SSLMethod):
    """MoCo v2: query encoder, momentum key encoder, queue of negatives, InfoNCE.

    The loss is symmetric (each view is once the query and once the key, as in the MoCo CIFAR
    demo, which learns faster for little extra compute). Both losses are computed against the
    queue as it was *before* the step; then both sets of keys are enqueued. Feeding the two
    halves through the loss one after the other would instead put the first half's keys into
    the second half's negatives, including the key of the query's own image.
    """

    name = "moco"

    def __init__(
        self,
        backbone: CifarResNet,
        *,
        temperature: float = DEFAULT_TEMPERATURE["moco"],
        queue_size: int = 4096,
        momentum: float = 0.99,
        hidden_dim: int = 512,
        out_dim: int = 128,
    ) -> None:
        super().__init__()
        if queue_size < 1:
            raise InvalidInputError(f"MoCo queue_size must be >= 1, got {queue_size}")
        if not 0 <= momentum < 1:
            raise InvalidInputError(f"momentum must be in [0, 1), got {momentum}")
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(backbone.out_dim, hidden_dim, out_dim)
        self.backbone_momentum = _momentum_copy(backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, out_dim))
        self.temperature, self.queue_size, self.momentum = temperature, queue_size, momentum

    def training_step(
        self, view_a: torch.Tensor, view_b: torch.Tensor, *, step: int = 0, total_steps: int = 1
    ) -> torch.Tensor:
        update_momentum(self.backbone, self.backbone_momentum, self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, self.momentum)
        q_a = self.projection_head(self.backbone(view_a))
        q_b = self.projection_head(self.backbone(view_b))
        with torch.no_grad():
            k_a = self.projection_head_momentum(self.backbone_momentum(view_a))
            k_b = self.projection_head_momentum(self.backbone_momentum(view_b))
        # One call: both halves see the same queue; the 2N keys are enqueued afterwards.
        return self.criterion(torch.cat([q_a, q_b]), torch.cat([k_b, k_a]))

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The queue and its pointer, which lightly does not put into ``state_dict``."""
        bank = self.criterion.memory_bank
        return {"queue": bank.bank.detach().clone(), "queue_ptr": bank.bank_ptr.detach().clone()}

    def set_extra_state(self, state: Any) -> None:
        bank = self.criterion.memory_bank
        queue, ptr = state["queue"], state["queue_ptr"]
        if tuple(queue.shape) != tuple(bank.bank.shape):
            raise InvalidInputError(
                f"saved MoCo queue has shape {tuple(queue.shape)}, this model expects "
                f"{tuple(bank.bank.shape)} (queue_size x projection dim)"
            )
        with torch.no_grad():
            bank.bank.copy_(queue)
            bank.bank_ptr.copy_(ptr)

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "temperature": self.temperature,
            "queue_size": self.queue_size,
            "momentum": self.momentum,
        }


class SimCLR(SSLMethod):
    """SimCLR: one encoder, projection head, NT-Xent with the other 2N - 2 views as negatives."""

    name = "simclr"

    def __init__(
        self,
        backbone: CifarResNet,
        *,
        temperature: float = DEFAULT_TEMPERATURE["simclr"],
        hidden_dim: int = 512,
        out_dim: int = 128,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.out_dim, hidden_dim, out_dim)
        self.criterion = NTXentLoss(temperature=temperature)
        self.temperature = temperature

    def training_step(
        self, view_a: torch.Tensor, view_b: torch.Tensor, *, step: int = 0, total_steps: int = 1
    ) -> torch.Tensor:
        z_a = self.projection_head(self.backbone(view_a))
        z_b = self.projection_head(self.backbone(view_b))
        return self.criterion(z_a, z_b)

    def settings(self) -> dict[str, Any]:
        return {"method": self.name, "temperature": self.temperature}


class BYOL(SSLMethod):
    """BYOL: online network with predictor regresses a momentum target network; no negatives.

    The target momentum rises from ``momentum`` to 1 on a cosine schedule over training, as in
    the BYOL paper; the loss is the symmetric negative cosine similarity.
    """

    name = "byol"

    def __init__(
        self,
        backbone: CifarResNet,
        *,
        momentum: float = 0.99,
        hidden_dim: int = 1024,
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        if not 0 <= momentum < 1:
            raise InvalidInputError(f"momentum must be in [0, 1), got {momentum}")
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(backbone.out_dim, hidden_dim, out_dim)
        self.prediction_head = BYOLPredictionHead(out_dim, hidden_dim, out_dim)
        self.backbone_momentum = _momentum_copy(backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = momentum

    def training_step(
        self, view_a: torch.Tensor, view_b: torch.Tensor, *, step: int = 0, total_steps: int = 1
    ) -> torch.Tensor:
        m = cosine_schedule(step, max(total_steps, 1), self.momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        p_a = self.prediction_head(self.projection_head(self.backbone(view_a)))
        p_b = self.prediction_head(self.projection_head(self.backbone(view_b)))
        with torch.no_grad():
            t_a = self.projection_head_momentum(self.backbone_momentum(view_a))
            t_b = self.projection_head_momentum(self.backbone_momentum(view_b))
        return 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))

    def settings(self) -> dict[str, Any]:
        return {"method": self.name, "momentum": self.momentum}


def build_method(
    name: str,
    backbone: CifarResNet,
    *,
    temperature: float | None = None,
    queue_size: int = 4096,
    momentum: float = 0.99,
) -> SSLMethod:
    """Wrap ``backbone`` in the method called ``name`` (one of :data:`METHODS`).

    ``temperature`` defaults per method (:data:`DEFAULT_TEMPERATURE`); BYOL has none.
    ``queue_size`` applies to MoCo only, ``momentum`` (the EMA factor) to MoCo and BYOL.
    """
    if temperature is not None and not temperature > 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    if name == "moco":
        t = DEFAULT_TEMPERATURE["moco"] if temperature is None else temperature
        return MoCo(backbone, temperature=t, queue_size=queue_size, momentum=momentum)
    if name == "simclr":
        t = DEFAULT_TEMPERATURE["simclr"] if temperature is None else temperature
        return SimCLR(backbone, temperature=t)
    if name == "byol":
        if temperature is not None:
            raise InvalidInputError("BYOL has no temperature; leave temperature unset")
        return BYOL(backbone, momentum=momentum)
    raise InvalidInputError(f"unknown self-supervised method {name!r}; known: {list(METHODS)}")
