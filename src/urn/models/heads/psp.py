"""PSPNet's pyramid pooling head (Zhao et al. 2017), laid out as mmseg's ``PSPHead``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.models.heads.common import ConvBNReLU, check_pooled_batch, classifier


class PSPHead(nn.Module):
    """Pyramid pooling on one feature map, then a 3x3 fusion conv and a 1x1 classifier.

    Each pyramid branch is adaptive average pooling to ``s x s`` -> 1x1 conv-BN-ReLU -> bilinear
    upsampling back; the branches are concatenated after the input and fused by a 3x3 conv-BN-ReLU.

    Args:
        in_channels: channels of every backbone feature (``backbone.out_channels``).
        num_classes: output channels (label slots, background included).
        channels: width of the branches and of the fused map.
        pool_sizes: pyramid grid sizes.
        dropout: Dropout2d before the classifier.
        in_index: which feature to use (default: the last).

    Training needs at least 2 images per device: the 1x1 branch normalises one value per image.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_sizes: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
        in_index: int = -1,
    ) -> None:
        super().__init__()
        self.in_index = in_index
        c = in_channels[in_index]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(c, channels, 1)) for s in pool_sizes
        )
        self.bottleneck = ConvBNReLU(c + len(pool_sizes) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = classifier(channels, num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features[in_index]`` ``(N, C_in, h, w)`` -> logits ``(N, num_classes, h, w)``."""
        x = features[self.in_index]
        check_pooled_batch(self, x)
        size = x.shape[-2:]
        pyramid = [x] + [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False) for branch in self.psp_modules
        ]
        return self.conv_seg(self.dropout(self.bottleneck(torch.cat(pyramid, dim=1))))
