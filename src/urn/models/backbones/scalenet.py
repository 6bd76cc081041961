"""ScaleNet-101 (Li et al., "Data-driven neuron allocation for scale aggregation networks").

A ResNet-101 whose 3x3 conv is replaced by a scale-aggregation (SA) block: the 1x1-reduced map
goes through four branches, identity and max-pools of 2, 4 and 7, each followed by a 3x3 conv (a
1x1 conv where the branch's ImageNet-time side length is 1 or less), is upsampled back (nearest
when the size divides evenly, else bilinear), batch-normalised and concatenated. How many output
channels each branch gets was found by the authors' neuron allocation and is stored per block in
:data:`SCALENET101_STRUCTURE` (from ``structures/scalenet101.json`` of Eli-YiLi/ScaleNet; a
branch with 0 channels is dropped). Layer names follow the reference, so ``scalenet101.pth`` loads.

As the reference segmentation backbone (URN_ALGORITHM.md 2.2), a strided block max-pools its
input instead of striding a conv, and output stride 8 dilates the 3x3 convs of the last two stages
(dilations 2 and 4): levels 1-4 are 256 @ 4, 512 @ 8, 1024 @ 8 and 2048 @ 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.errors import UrnError
from urn.models.backbones.timm_backbone import check_levels, expected_reductions
from urn.models.backbones.weights import Backbone

# Per SA-block [channels of the identity, /2, /4 and /7 branches, side length at 224 px input].
SCALENET101_STRUCTURE: tuple[tuple[int, int, int, int, int], ...] = (
    (61, 11, 7, 7, 56), (56, 23, 4, 3, 56), (59, 24, 3, 0, 56),
    (123, 41, 1, 6, 28), (126, 38, 1, 6, 28), (127, 41, 3, 0, 28), (127, 41, 3, 0, 28),
    (220, 86, 35, 0, 14), (186, 64, 55, 36, 14), (156, 25, 53, 107, 14), (191, 44, 52, 54, 14),
    (181, 53, 83, 24, 14), (221, 82, 34, 4, 14), (177, 62, 90, 12, 14), (130, 75, 102, 34, 14),
    (206, 71, 55, 9, 14), (203, 83, 53, 2, 14), (207, 73, 54, 7, 14), (245, 84, 12, 0, 14),
    (221, 103, 17, 0, 14), (221, 100, 20, 0, 14), (158, 99, 84, 0, 14), (220, 106, 15, 0, 14),
    (173, 92, 73, 3, 14), (135, 122, 84, 0, 14), (109, 71, 132, 29, 14), (147, 94, 93, 7, 14),
    (191, 108, 42, 0, 14), (127, 95, 113, 6, 14), (203, 117, 21, 0, 14),
    (282, 377, 23, 0, 7), (279, 388, 15, 0, 7), (84, 442, 155, 1, 7),
)  # fmt: skip
SCALES = (1, 2, 4, 7)  # max-pool size of each branch (1: identity)
EXPANSION = 4


class SABlock(nn.Module):
    """Scale-aggregation bottleneck: 1x1 -> four pooled 3x3 branches -> 1x1, plus the shortcut.

    Args:
        widths: output channels of the four branches (0 drops a branch).
        side: the block's feature side at ImageNet resolution; branch ``i`` uses a 1x1 conv
            when ``side / 2**i <= 1`` (a 3x3 conv on a 1x1 map is pointless), as trained.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        widths: Sequence[int],
        side: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: bool = False,
    ) -> None:
        super().__init__()
        out = planes * EXPANSION
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # ModuleDicts keyed "0".."3" keep the reference's key names (conv2.1.weight) when a branch is dropped.
        self.conv2 = nn.ModuleDict()
        self.bn2 = nn.ModuleDict()
        for i, width in enumerate(widths):
            if width <= 0:
                continue
            k, d = (3, dilation) if side / 2**i > 1 else (1, 1)
            self.conv2[str(i)] = nn.Conv2d(planes, width, k, padding=d * (k // 2), dilation=d, bias=False)
            self.bn2[str(i)] = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(sum(widths), out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out)) if downsample else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride)
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        size = y.shape[-2:]
        branches = []
        for key, conv in self.conv2.items():
            scale = SCALES[int(key)]
            b = y
            if scale > 1:
                # A map smaller than the pool: pool it whole. (The reference passes (H, W) as
                # kernel and stride here, which only does this for square maps.)
                small = size[0] < scale or size[1] < scale
                b = F.adaptive_max_pool2d(b, 1) if small else F.max_pool2d(b, scale, scale)
            b = conv(b)
            if scale > 1:
                even = size[0] % b.shape[-2] == 0 and size[1] % b.shape[-1] == 0
                mode = {"mode": "nearest"} if even else {"mode": "bilinear", "align_corners": False}
                b = F.interpolate(b, size=size, **mode)
            branches.append(self.bn2[key](b))
        y = F.relu(torch.cat(branches, dim=1))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


class ScaleNet(Backbone):
    """ScaleNet with dilated late stages; the defaults build ScaleNet-101.

    Args:
        pretrained: must be False (not on timm's hub); load ``scalenet101.pth`` via ``weights``.
        output_stride: 8 (the reference: stages strided (1, 2, 1, 1), dilated (1, 1, 2, 4)), 16 or 32.
        out_indices: levels among 0-4 (0: the stride-2 stem, 64 channels).
        layers: blocks per stage.
        structure: per block, four branch widths and the ImageNet side length.
        dilations: per-stage dilation instead of the one ``output_stride`` implies; PMM's
            classifier uses ``(1, 1, 1, 1)`` (stride 8, undilated).
    """

    def __init__(
        self,
        *,
        pretrained: bool = False,
        output_stride: int = 8,
        out_indices: tuple[int, ...] = (1, 2, 3, 4),
        layers: Sequence[int] = (3, 4, 23, 3),
        structure: Sequence[Sequence[int]] = SCALENET101_STRUCTURE,
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if pretrained:
            raise UrnError("scalenet101 has no hub weights: set model.backbone.weights to scalenet101.pth")
        check_levels(out_indices, output_stride)
        if len(structure) != sum(layers):
            raise ValueError(f"structure has {len(structure)} blocks, layers {tuple(layers)} need {sum(layers)}")
        self.out_indices = tuple(out_indices)
        self.out_channels = [64 if i == 0 else 64 * 2 ** (i - 1) * EXPANSION for i in out_indices]
        self.reductions = expected_reductions(self.out_indices, output_stride)

        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes, net_stride, dilation, first = 64, 4, 1, 0
        stages = []
        for i, depth in enumerate(layers):
            planes, stride = 64 * 2**i, 1 if i == 0 else 2
            if net_stride >= output_stride:  # past the output stride: dilate instead of pooling
                dilation, stride = dilation * stride, 1
            net_stride *= stride
            d = dilation if dilations is None else dilations[i]
            blocks = []
            for b, (*widths, side) in enumerate(structure[first : first + depth]):
                blocks.append(
                    SABlock(
                        inplanes,
                        planes,
                        widths=widths,
                        side=side,
                        stride=stride if b == 0 else 1,
                        dilation=d,
                        downsample=b == 0 and (stride != 1 or inplanes != planes * EXPANSION),
                    )
                )
                inplanes = planes * EXPANSION
            first += depth
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` -> the requested levels (``[256 @ 4, 512 @ 8, 1024 @ 8, 2048 @ 8]`` at OS 8)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(F.max_pool2d(stem, 3, 2, 1))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        levels = (stem, x1, x2, x3, x4)
        return [levels[i] for i in self.out_indices]

    def freeze_stem(self) -> None:
        """Freeze ``conv1``, ``bn1`` and ``layer1``, as the PMM classifier does."""
        for m in (self.conv1, self.bn1, self.layer1):
            m.requires_grad_(False)
