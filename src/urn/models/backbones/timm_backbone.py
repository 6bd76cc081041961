"""Any timm CNN as a dilated backbone: ``features_only`` + ``output_stride`` + ``out_indices``.

Levels follow timm's ResNet convention: level 0 is the stride-2 stem, levels 1-4 are the four
stages (strides 4, 8, 16, 32 before dilation). At output stride 8 the last two stages are dilated
instead of strided, so levels 1-4 come out at strides 4, 8, 8, 8. Models whose ``feature_info`` has
only four levels (ConvNeXt, ...) have no level 0.

Named aliases give the reference's backbones (URN_ALGORITHM.md 2.2):

- ``resnet101``: torchvision layout, dilation contracted in the first block of the dilated
  stages, as mmseg ``ResNet(contract_dilation=True)``; takes ``resnet101-5d3b4d8f.pth``.
- ``resnet101c``: mmseg ResNetV1c (deep stem 32-32-64), timm ``resnet101c``.
- ``res2net101``: Res2Net-101 v1b 26w4s (deep stem, avg-pool shortcut), timm ``res2net101d`` with the
  reference's dilation layout (see :func:`uniform_stage_dilation`).
"""

from __future__ import annotations

from torch import Tensor, nn

from urn.errors import UrnError
from urn.models.backbones.weights import Backbone

# alias -> (timm name, apply the reference's uniform dilation)
TIMM_ALIASES: dict[str, tuple[str, bool]] = {
    "resnet18": ("resnet18", False),
    "resnet50": ("resnet50", False),
    "resnet101": ("resnet101", False),
    "resnet101c": ("resnet101c", False),
    "res2net101": ("res2net101d", True),
    "mobilenetv3": ("mobilenetv3_large_100", False),
    "efficientnet_lite0": ("efficientnet_lite0", False),
}


def expected_reductions(levels: tuple[int, ...], output_stride: int) -> list[int]:
    """Stride of each level at ``output_stride`` (level 0: 2, level i: ``min(2**(i+1), os)``)."""
    return [min(2 ** (i + 1), output_stride) for i in levels]


def check_levels(out_indices: tuple[int, ...], output_stride: int, lowest: int = 0) -> None:
    """Raise :class:`UrnError` for levels outside ``lowest..4`` or an unsupported output stride."""
    if output_stride not in (8, 16, 32):
        raise UrnError(f"backbone output_stride must be 8, 16 or 32, got {output_stride}")
    if not out_indices or any(not lowest <= i <= 4 for i in out_indices):
        raise UrnError(f"backbone out_indices must lie in {lowest}..4, got {tuple(out_indices)}")


class TimmBackbone(Backbone):
    """A timm ``features_only`` model returning the requested levels.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``resnet50``, ``convnext_tiny``.
        pretrained: download timm's ImageNet weights (needs network; never in tests).
        output_stride: 8 (the reference), 16 or 32.
        out_indices: levels to return, finest first (default: the four stages).
        uniform_dilation: give every block of a dilated stage the stage's dilation, as the
            reference's Res2Net does, instead of timm's contracted first block.
    """

    def __init__(
        self,
        name: str,
        *,
        pretrained: bool = False,
        output_stride: int = 8,
        out_indices: tuple[int, ...] = (1, 2, 3, 4),
        uniform_dilation: bool = False,
    ) -> None:
        super().__init__()
        import timm

        check_levels(out_indices, output_stride)
        self.name = name
        try:
            # Negative indices count from the deepest level, so 4- and 5-level models agree.
            self.model = timm.create_model(
                name,
                pretrained=pretrained,
                features_only=True,
                output_stride=output_stride,
                out_indices=tuple(i - 5 for i in out_indices),
            )
        except (RuntimeError, TypeError, ValueError, AssertionError, IndexError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UrnError(
                f"backbone {name}: timm cannot build it with features_only and output_stride={output_stride} ({first})"
            ) from None
        self.out_channels = list(self.model.feature_info.channels())
        self.reductions = list(self.model.feature_info.reduction())
        want = expected_reductions(out_indices, output_stride)
        if self.reductions != want:
            raise UrnError(f"backbone {name}: timm gives feature strides {self.reductions}, need {want}")
        if uniform_dilation:
            uniform_stage_dilation(self.model)

    @property
    def native(self) -> nn.Module:
        """The timm model: its state-dict keys are timm's / torchvision's."""
        return self.model

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` -> one ``(N, C_i, H / r_i, W / r_i)`` map per requested level."""
        return self.model(x)

    def freeze_stem(self) -> None:
        """Freeze every parameter up to and including the first stage (level 1)."""
        info = self.model.feature_info.info
        first = info[len(info) - 4]["module"]
        prefixes = (first + ".", first.replace(".", "_") + ".")
        seen = False
        for pname, p in self.model.named_parameters():
            inside = pname.startswith(prefixes)
            if seen and not inside:
                break
            seen = seen or inside
            p.requires_grad_(False)


def uniform_stage_dilation(model: nn.Module) -> None:
    """Undo timm's dilation contraction in ResNet-style stages (``layer1``..``layer4``).

    timm gives the first block of a dilated stage the previous stage's dilation and an average
    pool (2x2, stride 1) in its shortcut. The reference's Res2Net uses the stage's dilation in every
    block and a 1x1 (identity) pool there, so the first block is patched to match. Parameters are
    untouched: checkpoints load either way.
    """
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, layer_name, None)
        if not isinstance(layer, nn.Sequential) or len(layer) < 2:
            continue
        first, second = layer[0], layer[1]
        convs = list(getattr(first, "convs", [])) or [getattr(first, "conv2", None)]
        ref = (list(getattr(second, "convs", [])) or [getattr(second, "conv2", None)])[0]
        if not isinstance(ref, nn.Conv2d) or ref.dilation[0] == 1:
            continue
        for conv in convs:
            if isinstance(conv, nn.Conv2d):
                conv.dilation, conv.padding = ref.dilation, ref.padding
        down = getattr(first, "downsample", None)
        stride_one = isinstance(convs[0], nn.Conv2d) and convs[0].stride == (1, 1)
        if isinstance(down, nn.Sequential) and stride_one and "AvgPool" in type(down[0]).__name__:
            down[0] = nn.Identity()  # the reference's AvgPool2d(kernel_size=stride=1)
