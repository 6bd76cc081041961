"""CAM classifiers: a plain GAP classifier (``CAMNet``) and the SEAM/PMM variant with a PCM (``SEAMNet``).

Both wrap any :class:`urn.models.backbones.Backbone` returning 4 stage features (any timm CNN,
WRN-38, ScaleNet-101). ``forward`` returns image-level logits over the ``C - 1``
foreground classes; ``cam(x)`` returns the class maps used at inference, at feature stride.

``SEAMNet`` follows URN_ALGORITHM.md 1.1: ``fc8`` gives ``C`` maps (channel 0 is an unsupervised
background map); the Pixel Correlation Module refines the detached, max-normalised, arg-max-only
CAM with an affinity built from the last-but-two and last-but-one stage features plus the image.
Inference uses the refined CAM (``cam_rv``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.config import CAMConfig
from urn.errors import ConfigError


class SEAMOutput(NamedTuple):
    """Both SEAM maps at feature stride: ``cam`` and PCM-refined ``cam_rv``, each ``(B, C, h, w)``."""

    cam: Tensor
    cam_rv: Tensor


class _CAMBase(nn.Module):
    """Shared plumbing: backbone, head parameter groups."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, dropout: float = 0.0, freeze_bn: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes  # C including background
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        if freeze_bn:
            # the reference trains with frozen BN (statistics and affine): batches of 8-24 crops
            # are too small for batch statistics; the backbone keeps BN in eval mode through train()
            backbone.freeze_bn(affine=True)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained from scratch (LR x ``head_lr_mult``)."""
        raise NotImplementedError

    def param_groups(self, lr: float, weight_decay: float, head_lr_mult: float) -> list[dict[str, Any]]:
        """SGD groups as the reference: backbone weights (lr, wd), backbone biases and norms
        (2 lr, wd 0), head weights (m lr, wd), head biases (2 m lr, wd 0). Frozen parameters are left out."""
        head_ids = {id(p) for m in self.head_modules() for p in m.parameters()}
        groups: list[list[nn.Parameter]] = [[], [], [], []]
        for p in self.parameters():
            if not p.requires_grad:
                continue
            slot = (2 if id(p) in head_ids else 0) + (1 if p.ndim <= 1 else 0)
            groups[slot].append(p)
        mults = (1.0, 2.0, head_lr_mult, 2.0 * head_lr_mult)
        decays = (weight_decay, 0.0, weight_decay, 0.0)
        return [
            {"params": g, "lr": lr * m, "initial_lr": lr * m, "weight_decay": wd}
            for g, m, wd in zip(groups, mults, decays, strict=True)
            if g
        ]

    def cam(self, x: Tensor) -> Tensor:
        """Foreground class maps ``(B, C - 1, h, w)`` at feature stride (raw, not normalised)."""
        raise NotImplementedError


class CAMNet(_CAMBase):
    """Multi-label classifier whose logits are the global average of 1x1-conv class maps.

    Args:
        backbone: returns a list of stage features; must expose ``out_channels``.
        num_classes: ``C`` including background (the classifier has ``C - 1`` maps).
        dropout: Dropout2d before the classifier.
        freeze_bn: keep backbone norm layers in eval mode with frozen affine parameters.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, dropout: float = 0.0, freeze_bn: bool = False) -> None:
        super().__init__(backbone, num_classes, dropout=dropout, freeze_bn=freeze_bn)
        self.classifier = nn.Conv2d(backbone.out_channels[-1], num_classes - 1, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)

    def head_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def cam(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, C - 1, h, w)`` class maps."""
        return self.classifier(self.dropout(self.backbone(x)[-1]))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, C - 1)`` logits (GAP of the class maps)."""
        return self.cam(x).mean(dim=(2, 3))


class SEAMNet(_CAMBase):
    """SEAM-style classifier: CAM head + Pixel Correlation Module (PMM's ``*_SEAM`` networks).

    Args:
        backbone: returns 4 stage features; the last three feed ``fc8`` and the PCM.
        num_classes: ``C`` including background; ``fc8`` has ``C`` maps, channel 0 unsupervised.
        dropout: Dropout2d before ``fc8`` (0.5 for WRN-38 in the reference, none for ScaleNet).
        freeze_bn: keep backbone norm layers frozen (the reference does).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, dropout: float = 0.0, freeze_bn: bool = False) -> None:
        super().__init__(backbone, num_classes, dropout=dropout, freeze_bn=freeze_bn)
        ch = backbone.out_channels
        self.fc8 = nn.Conv2d(ch[-1], num_classes, 1, bias=False)
        self.f8_3 = nn.Conv2d(ch[-3], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(ch[-2], 128, 1, bias=False)
        self.f9 = nn.Conv2d(192 + 3, 192, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def head_modules(self) -> list[nn.Module]:
        return [self.fc8, self.f8_3, self.f8_4, self.f9]

    def forward_seam(self, x: Tensor) -> SEAMOutput:
        """``(B, 3, H, W)`` -> ``cam`` and ``cam_rv``, each ``(B, C, h, w)`` at feature stride."""
        feats = self.backbone(x)
        cam = self.fc8(self.dropout(feats[-1]))
        h, w = cam.shape[2:]
        with torch.no_grad():
            seed = _pcm_seed(cam.detach())
        # the PCM learns its own features: the backbone gets no gradient through it
        f3 = F.relu(self.f8_3(_resize(feats[-3].detach(), (h, w))))
        f4 = F.relu(self.f8_4(_resize(feats[-2].detach(), (h, w))))
        f = torch.cat([_resize(x, (h, w)), f3, f4], dim=1)
        return SEAMOutput(cam, self._pcm(seed, f))

    def _pcm(self, cam: Tensor, f: Tensor) -> Tensor:
        n, c, h, w = cam.shape
        f = self.f9(f).flatten(2)  # (B, 192, hw)
        f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
        aff = F.relu(torch.matmul(f.transpose(1, 2), f))  # (B, hw, hw)
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)  # each column sums to 1
        return torch.matmul(cam.flatten(2), aff).view(n, c, h, w)

    def cam(self, x: Tensor) -> Tensor:
        """Refined foreground maps ``cam_rv[:, 1:]``, ``(B, C - 1, h, w)``."""
        return self.forward_seam(x).cam_rv[:, 1:]

    def forward(self, x: Tensor, seam: bool = False) -> Tensor | SEAMOutput:
        """``(B, 3, H, W)`` -> ``(B, C - 1)`` foreground logits (GAP of ``cam``), or with ``seam``
        both maps (:meth:`forward_seam`; through ``forward`` so that a DDP wrapper syncs gradients)."""
        if seam:
            return self.forward_seam(x)
        return self.fc8(self.dropout(self.backbone(x)[-1]))[:, 1:].mean(dim=(2, 3))


def _pcm_seed(cam: Tensor) -> Tensor:
    """PCM input: ReLU, per-channel max-normalise, bg := 1 - max fg, keep only the arg-max fg channel."""
    n, c = cam.shape[:2]
    cam = F.relu(cam)
    peak = cam.flatten(2).max(dim=-1)[0].view(n, c, 1, 1) + 1e-5
    norm = F.relu(cam - 1e-5) / peak
    fg = norm[:, 1:]
    top = fg.max(dim=1, keepdim=True)[0]
    fg = torch.where(fg < top, torch.zeros_like(fg), fg)
    return torch.cat([1.0 - top, fg], dim=1)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size, mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------------------- building
def build_cam_net(cfg: CAMConfig, num_classes: int, backbone: nn.Module | None = None) -> _CAMBase:
    """Build the classifier named by ``cfg.network`` for ``num_classes`` (including background).

    Args:
        cfg: the ``cam`` section (network, backbone, dropout, freezing).
        num_classes: ``C`` including background.
        backbone: use this instead of building ``cfg.backbone`` (tests); it must offer
            ``out_channels`` and, when asked to freeze, ``freeze_stem()`` / ``freeze_bn(affine)``.

    Raises:
        ConfigError: unknown network.
    """
    nets: dict[str, type[_CAMBase]] = {"plain": CAMNet, "seam": SEAMNet}
    if cfg.network not in nets:
        raise ConfigError(f"cam.network: unknown {cfg.network!r} (choose from {', '.join(nets)})")
    if backbone is None:
        from urn.models import build_backbone

        backbone = build_backbone(cfg.backbone, out_indices=(1, 2, 3, 4), key="cam.backbone")
    if cfg.freeze_stem:
        backbone.freeze_stem()
    return nets[cfg.network](backbone, num_classes, dropout=cfg.head_dropout, freeze_bn=cfg.freeze_bn)
