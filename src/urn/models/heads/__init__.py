"""Decode heads: each maps the backbone's feature list to logits at feature stride (no upsampling, no loss)."""

from urn.models.heads.deeplabv3plus import DeepLabV3PlusHead
from urn.models.heads.fcn import FCNHead
from urn.models.heads.psp import PSPHead

__all__ = ["DeepLabV3PlusHead", "FCNHead", "PSPHead"]
