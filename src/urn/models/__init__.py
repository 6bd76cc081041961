"""Models: plain-dict registries of backbones and heads, and the builders the stages call.

Adding a backbone or head means one file and one line in :data:`BACKBONES` / :data:`HEADS`. Any
timm CNN name not in :data:`BACKBONES` also works as a backbone (e.g. ``resnet50``, ``convnext_tiny``).

Example::

    model = build_segmentor(cfg.model, num_classes=21)
    out = model(images)["out"]  # (N, 21, H, W)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from torch import nn

from urn.config import BackboneConfig, ModelConfig
from urn.errors import ConfigError
from urn.models.backbones import TIMM_ALIASES, Backbone, ScaleNet, TimmBackbone, WideResNet38
from urn.models.heads import DeepLabV3PlusHead, FCNHead, PSPHead
from urn.models.segmentor import Segmentor

log = logging.getLogger(__name__)

# name -> constructor(*, pretrained, output_stride, out_indices) -> Backbone
BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{
        alias: partial(TimmBackbone, timm_name, uniform_dilation=uniform)
        for alias, (timm_name, uniform) in TIMM_ALIASES.items()
    },
    "wide_resnet38": WideResNet38,
    "scalenet101": ScaleNet,
}

# name -> constructor(*, in_channels, num_classes, channels, dropout) -> head
HEADS: dict[str, type[nn.Module]] = {
    "psp": PSPHead,
    "fcn": FCNHead,
    "deeplabv3plus": DeepLabV3PlusHead,
}


def build_backbone(cfg: BackboneConfig, out_indices: tuple[int, ...] = (1, 2, 3, 4)) -> Backbone:
    """Build the backbone ``cfg.name`` and load ``cfg.weights`` if set.

    Args:
        cfg: name, output stride, hub or local weights. Local weights win over ``pretrained``.
        out_indices: levels to return; 1-4 are the four stages (strides 4, 8, 8, 8 at output
            stride 8), 0 the stride-2 stem where the network has one.

    Raises:
        ConfigError: unknown name. UrnError: unsupported stride/levels, unusable weights file.
    """
    ctor = BACKBONES.get(cfg.name)
    if ctor is None:
        import timm

        if not timm.is_model(cfg.name):
            raise ConfigError(
                f"backbone: unknown name {cfg.name!r} (choose from {', '.join(BACKBONES)}, "
                "or any timm CNN name such as resnet50)"
            )
        ctor = partial(TimmBackbone, cfg.name)
    pretrained = cfg.pretrained and not cfg.weights
    if cfg.pretrained and cfg.weights:
        log.info("backbone: using local weights %s instead of the hub's", cfg.weights)
    backbone = ctor(pretrained=pretrained, output_stride=cfg.output_stride, out_indices=tuple(out_indices))
    if cfg.weights:
        backbone.load_weights(cfg.weights)
    return backbone


def build_segmentor(cfg: ModelConfig, num_classes: int) -> Segmentor:
    """Backbone + ``HEADS[cfg.head]`` + an FCN auxiliary head on the third stage if ``cfg.aux_head``.

    Raises:
        ConfigError: unknown head or backbone name.
    """
    head_cls = HEADS.get(cfg.head)
    if head_cls is None:
        raise ConfigError(f"model.head: unknown head {cfg.head!r} (choose from {', '.join(HEADS)})")
    backbone = build_backbone(cfg.backbone)
    if cfg.backbone.norm_eval:
        backbone.freeze_bn()
    channels = backbone.out_channels
    head = head_cls(in_channels=channels, num_classes=num_classes, channels=cfg.head_channels, dropout=cfg.dropout)
    aux = None
    if cfg.aux_head:
        aux = FCNHead(in_channels=channels, num_classes=num_classes, channels=cfg.aux_channels, dropout=cfg.dropout)
    return Segmentor(backbone, head, aux)


__all__ = ["BACKBONES", "HEADS", "Backbone", "Segmentor", "build_backbone", "build_segmentor"]
