"""Backbone + decode head (+ auxiliary head) -> logits at input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.models.backbones import Backbone


class Segmentor(nn.Module):
    """Runs backbone -> head and upsamples the logits bilinearly to the input size.

    The auxiliary head (PSPNet's FCN on the third stage) only runs in training mode: at inference
    its output is never used, so it costs nothing there.

    Args:
        backbone: returns a list of stage features.
        head: features -> logits at feature stride.
        aux_head: optional second head trained with a smaller loss weight.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(N, 3, H, W)`` -> ``{"out": (N, C, H, W)}``, plus ``"aux"`` (same shape) when training."""
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"out": _resize(self.head(features), size)}
        if self.training and self.aux_head is not None:
            out["aux"] = _resize(self.aux_head(features), size)
        return out


def _resize(logits: Tensor, size: torch.Size) -> Tensor:
    """Bilinear (align_corners=False, as mmseg) to ``size``; a no-op when already there."""
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
