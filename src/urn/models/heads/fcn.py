"""The FCN head, used as PSPNet's auxiliary head (mmseg ``FCNHead``, ``concat_input=False``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from urn.models.heads.common import ConvBNReLU, classifier


class FCNHead(nn.Module):
    """``num_convs`` 3x3 conv-BN-ReLU layers, Dropout2d, 1x1 classifier.

    Args:
        in_channels: channels of every backbone feature (``backbone.out_channels``).
        num_classes: output channels.
        channels: width of the conv layers.
        dropout: Dropout2d before the classifier.
        in_index: which feature to use (default 2: the third stage, 1024 channels on ResNet-101).
        num_convs: number of 3x3 layers.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
        in_index: int = 2,
        num_convs: int = 1,
    ) -> None:
        super().__init__()
        self.in_index = in_index
        widths = [in_channels[in_index]] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvBNReLU(a, b, 3) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = classifier(channels, num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features[in_index]`` ``(N, C_in, h, w)`` -> logits ``(N, num_classes, h, w)``."""
        return self.conv_seg(self.dropout(self.convs(features[self.in_index])))
