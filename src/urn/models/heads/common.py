"""The one helper the heads share: conv -> BN -> ReLU, named like mmcv's ``ConvModule``.

Keeping mmcv's names (``conv``, ``bn``) makes an mmseg head checkpoint load with no renaming.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from urn.errors import UrnError


class ConvBNReLU(nn.Sequential):
    """``Conv2d`` (no bias: BN follows) -> ``BatchNorm2d`` -> ``ReLU``, "same" padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        # mmcv's ConvModule init (Kaiming normal, fan-out), so heads train as in the reference.
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels), act=nn.ReLU(inplace=True)))


def classifier(channels: int, num_classes: int) -> nn.Conv2d:
    """The final 1x1 conv (``conv_seg``), initialised N(0, 0.01) with zero bias as in mmseg."""
    conv = nn.Conv2d(channels, num_classes, 1)
    nn.init.normal_(conv.weight, 0.0, 0.01)
    nn.init.zeros_(conv.bias)
    return conv


def check_pooled_batch(module: nn.Module, x: Tensor) -> None:
    """A globally pooled branch normalises one value per image: training needs 2+ images per device.

    Raised here as a one-line :class:`~urn.errors.UrnError` instead of BatchNorm's cryptic message.
    """
    if module.training and x.shape[0] < 2:
        raise UrnError(
            f"{type(module).__name__} needs at least 2 images per device in training (its 1x1 pooled "
            "branch is batch-normalised): raise the batch size"
        )
