"""DeepLabV3+ (Chen et al. 2018): separable ASPP on the last feature, fused with stride-4 features.

Shows that a new head is one file: a keyword-only constructor taking the backbone's channel list,
``forward(features) -> logits`` at feature stride, and one line in ``urn.models.HEADS``.

Layer names follow mmseg's ``DepthwiseSeparableASPPHead``, but the layers are the lighter ones of
the paper and smp (mmseg checkpoints of this head do not load): the ASPP projection is a 1x1 conv
(mmseg: 3x3), a separable conv has no BN-ReLU between its depthwise and pointwise parts, and one
separable conv refines the fused map by default (mmseg: two). The reference trains PSPNet only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.models.heads.common import ConvBNReLU, check_pooled_batch, classifier


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 conv (dilated) then pointwise 1x1 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1) -> None:
        super().__init__()
        # No BN-ReLU after the depthwise conv (as smp): it costs ~10% of the head and no accuracy
        # difference is documented for it.
        self.depthwise_conv = nn.Conv2d(
            in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False
        )
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, 1)


class DeepLabV3PlusHead(nn.Module):
    """ASPP (image pooling, 1x1, separable atrous convs) + low-level fusion; logits at stride 4.

    Args:
        in_channels: channels of every backbone feature (``backbone.out_channels``).
        num_classes: output channels.
        channels: ASPP and decoder width.
        dilations: the ASPP branches' rates (1: the 1x1 branch); (12, 24, 36) suits output stride 8.
        low_level_channels: width of the projected stride-4 features.
        fuse_convs: separable 3x3 convs on the fused map (mmseg and the paper use 2).
        dropout: Dropout2d before the classifier.
        in_index: the ASPP input (default: the last feature).
        low_level_index: the fine feature to fuse (default: the first, stride 4).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dilations: tuple[int, ...] = (1, 12, 24, 36),
        low_level_channels: int = 48,
        fuse_convs: int = 1,
        dropout: float = 0.1,
        in_index: int = -1,
        low_level_index: int = 0,
    ) -> None:
        super().__init__()
        self.in_index, self.low_level_index = in_index, low_level_index
        c = in_channels[in_index]
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(c, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(c, channels, 1) if d == 1 else SeparableConvBNReLU(c, channels, dilation=d) for d in dilations
        )
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 1)
        self.c1_bottleneck = ConvBNReLU(in_channels[low_level_index], low_level_channels, 1)
        widths = [channels + low_level_channels] + [channels] * fuse_convs
        self.sep_bottleneck = nn.Sequential(
            *(SeparableConvBNReLU(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = classifier(channels, num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features`` -> logits ``(N, num_classes, h4, w4)`` at the low-level feature's stride."""
        x = features[self.in_index]
        check_pooled_batch(self, x)
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])  # a 1x1 map: broadcast, no interpolation
        aspp = self.bottleneck(torch.cat([pooled] + [m(x) for m in self.aspp_modules], dim=1))
        low = self.c1_bottleneck(features[self.low_level_index])
        aspp = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(self.sep_bottleneck(torch.cat([aspp, low], dim=1))))
