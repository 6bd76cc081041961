"""Wide ResNet-38 ("wider or deeper", the SEAM/URN ``resnet38d``), output stride 8.

Pre-activation residual blocks; layer names follow the reference so that ``res38d.pth`` and
the reference's segmentation checkpoints load unchanged (URN_ALGORITHM.md 1.1 and 2.2):

=========  =================================  ======================
block      channels (in -> mid -> out)        stride / dilation
=========  =================================  ======================
conv1a     3 -> 64 (3x3)                      1
b2, b2_*   64 -> 128 -> 128, x3               2
b3, b3_*   128 -> 256 -> 256, x3              2
b4, b4_*   256 -> 512 -> 512, x6              2
b5, b5_*   512 -> 512 -> 1024, x3             dilation 2 (first conv: 1)
b6         1024 -> 2048 bottleneck            dilation 4, dropout 0.3
b7         2048 -> 4096 bottleneck            dilation 4, dropout 0.5
bn7        BN + ReLU
=========  =================================  ======================

The stages returned (levels 1-4) are the BN-ReLU inputs of b4, b5 and b6 and the final output:
256 @ 4, 512 @ 8, 1024 @ 8 and 4096 @ 8.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from urn.errors import UrnError
from urn.models.backbones.timm_backbone import check_levels
from urn.models.backbones.weights import Backbone


class ResBlock(nn.Module):
    """Pre-activation basic block (two 3x3 convs); returns ``(output, BN-ReLU of the input)``."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(
            in_channels, mid_channels, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(y)))
        return shortcut + y, pre


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck (1x1, dilated 3x3, 1x1) with Dropout2d inside; ``out/4`` and ``out/2`` wide."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, out_channels // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_channels // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_channels // 4, out_channels // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_channels // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_channels // 2, out_channels, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return self.conv_branch1(pre) + y, pre


class WideResNet38(Backbone):
    """Wide ResNet-38 at output stride 8 (the only stride the reference network has).

    Args:
        pretrained: must be False (timm has no ResNet-38); load ``res38d.pth`` via ``weights``.
        output_stride: must be 8.
        out_indices: levels among 1-4 (256 @ 4, 512 @ 8, 1024 @ 8, 4096 @ 8).
        b7_dilation: 4 as SEAM and the segmentation reference; PMM's classifier uses 2 (quirk Q7).
    """

    def __init__(
        self,
        *,
        pretrained: bool = False,
        output_stride: int = 8,
        out_indices: tuple[int, ...] = (1, 2, 3, 4),
        b7_dilation: int = 4,
    ) -> None:
        super().__init__()
        if pretrained:
            raise UrnError("wide_resnet38 has no hub weights: set model.backbone.weights to res38d.pth")
        check_levels(out_indices, output_stride, lowest=1)
        if output_stride != 8:
            raise UrnError(f"wide_resnet38 has output stride 8 only, got {output_stride}")
        self.out_indices = tuple(out_indices)
        self.out_channels = [(256, 512, 1024, 4096)[i - 1] for i in out_indices]
        self.reductions = [(4, 8, 8, 8)[i - 1] for i in out_indices]

        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)
        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)
        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)
        self.b5 = ResBlock(512, 512, 1024, dilation=2, first_dilation=1)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = BottleneckBlock(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(2048, 4096, dilation=b7_dilation, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` -> the requested levels of ``[256 @ 4, 512 @ 8, 1024 @ 8, 4096 @ 8]``."""
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2):
            x, _ = block(x)
        x, level1 = self.b4(x)
        for block in (self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x, _ = block(x)
        x, level2 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, level3 = self.b6(x)
        x, _ = self.b7(x)
        levels = (level1, level2, level3, F.relu(self.bn7(x)))
        return [levels[i - 1] for i in self.out_indices]

    def freeze_stem(self) -> None:
        """Freeze ``conv1a`` and the b2 blocks, as the PMM classifier does."""
        for m in (self.conv1a, self.b2, self.b2_1, self.b2_2):
            m.requires_grad_(False)
