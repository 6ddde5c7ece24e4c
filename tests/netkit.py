"""Helpers for tests that build networks: batch norms with non-trivial statistics."""

from __future__ import annotations

import torch
from torch import nn


def randomise_bn(module: nn.Module, seed: int) -> nn.Module:
    """Give every batch norm random affine weights and running statistics (split batch norm's
    per-split buffers included), so that a wrongly loaded or dropped layer changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=gen))
                m.bias.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module
