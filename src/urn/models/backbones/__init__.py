"""Backbones: one interface (:class:`Backbone`), timm for everything timm has, two native networks.

Every backbone's ``forward(x)`` returns a list of feature maps, finest first, and exposes
``out_channels`` and ``reductions``; at output stride 8 the four stages come out at strides 4, 8,
8, 8. WRN-38 and ScaleNet-101 are not in timm and live in their own files.
"""

from urn.models.backbones.scalenet import ScaleNet
from urn.models.backbones.timm_backbone import TIMM_ALIASES, TimmBackbone
from urn.models.backbones.weights import EFFICIENTNET_LITE0_PACKAGE, Backbone, load_backbone_weights
from urn.models.backbones.wide_resnet38 import WideResNet38

__all__ = [
    "EFFICIENTNET_LITE0_PACKAGE",
    "TIMM_ALIASES",
    "Backbone",
    "ScaleNet",
    "TimmBackbone",
    "WideResNet38",
    "load_backbone_weights",
]
