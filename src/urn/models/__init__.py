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
from pathlib import Path

from torch import nn

from urn.config import BackboneConfig, ModelConfig
from urn.errors import ConfigError
from urn.models.backbones import (
    EFFICIENTNET_LITE0_PACKAGE,
    TIMM_ALIASES,
    Backbone,
    ScaleNet,
    TimmBackbone,
    WideResNet38,
)
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


#: The ImageNet weights the reference starts each backbone from, and where they come from: the value
#: of ``model.backbone.weights`` / ``cam.backbone.weights`` in the reference presets (README, "Reproduce
#: the paper").
REFERENCE_WEIGHTS: dict[str, str] = {
    "res2net101": "res2net101_v1b_26w_4s-0812c246.pth, Res2Net-101 v1b 26w4s from the Res2Net authors "
    "(github.com/Res2Net/Res2Net-PretrainedModels)",
    "resnet101": "resnet101-5d3b4d8f.pth, torchvision's ImageNet ResNet-101 (IMAGENET1K_V1)",
    "scalenet101": "scalenet101.pth from the ScaleNet authors (github.com/Eli-YiLi/ScaleNet)",
    "wide_resnet38": "res38d.pth, the ImageNet WRN-38 of PSA/SEAM (the CAM stage 1 uses SEAM's resnet38_SEAM.pth)",
}


def check_backbone_init(cfg: BackboneConfig, key: str = "model.backbone") -> None:
    """Refuse a backbone the reference would start from ImageNet weights but that has none.

    Args:
        cfg: the backbone section.
        key: its dotted name in the config (``model.backbone`` or ``cam.backbone``), for the message.

    Raises:
        ConfigError: ``cfg.allow_random_init`` is false and neither ``weights`` nor ``pretrained`` is
            set, or ``weights`` names a file that does not exist; the message names the key to set.
    """
    if cfg.allow_random_init or cfg.weights == EFFICIENTNET_LITE0_PACKAGE:
        return
    source = REFERENCE_WEIGHTS.get(cfg.name, "ImageNet weights for this backbone")
    advice = f"set it to a local file, or {key}.allow_random_init=true to train from random initialisation"
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(
            f"{key}.weights: {cfg.weights}: file not found; the reference trains {cfg.name} from ImageNet "
            f"weights ({source}); {advice}"
        )
    if not cfg.weights and not cfg.pretrained:
        raise ConfigError(
            f"{key}.weights is not set; the reference trains {cfg.name} from ImageNet weights ({source}); {advice}"
        )


def build_backbone(
    cfg: BackboneConfig, out_indices: tuple[int, ...] = (1, 2, 3, 4), *, key: str = "model.backbone"
) -> Backbone:
    """Build the backbone ``cfg.name`` and load ``cfg.weights`` if set.

    Args:
        cfg: name, output stride, hub or local weights. Local weights win over ``pretrained``.
        out_indices: levels to return; 1-4 are the four stages (strides 4, 8, 8, 8 at output
            stride 8), 0 the stride-2 stem where the network has one.
        key: the section's dotted name (``model.backbone`` or ``cam.backbone``), for messages.

    Raises:
        ConfigError: unknown name; ``dilations`` on a backbone other than ScaleNet-101; no ImageNet
            weights while ``allow_random_init`` is false (:func:`check_backbone_init`).
        UrnError: unsupported stride/levels, unusable weights file.
    """
    check_backbone_init(cfg, key)
    ctor = BACKBONES.get(cfg.name)
    if ctor is None:
        import timm

        if not timm.is_model(cfg.name):
            raise ConfigError(
                f"backbone: unknown name {cfg.name!r} (choose from {', '.join(BACKBONES)}, "
                "or any timm CNN name such as resnet50)"
            )
        ctor = partial(TimmBackbone, cfg.name)
    extra = {}
    if cfg.dilations is not None:
        if cfg.name != "scalenet101":
            raise ConfigError(f"{key}.dilations: only scalenet101 takes per-stage dilations, not {cfg.name!r}")
        if len(cfg.dilations) != 4 or any(d < 1 for d in cfg.dilations):
            raise ConfigError(f"{key}.dilations: four positive stage dilations, got {list(cfg.dilations)}")
        extra["dilations"] = tuple(cfg.dilations)
    pretrained = cfg.pretrained and not cfg.weights
    if cfg.pretrained and cfg.weights:
        log.info("backbone: using local weights %s instead of the hub's", cfg.weights)
    backbone = ctor(pretrained=pretrained, output_stride=cfg.output_stride, out_indices=tuple(out_indices), **extra)
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


__all__ = [
    "BACKBONES",
    "HEADS",
    "REFERENCE_WEIGHTS",
    "Backbone",
    "Segmentor",
    "build_backbone",
    "build_segmentor",
    "check_backbone_init",
]
