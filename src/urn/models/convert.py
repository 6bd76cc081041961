"""Import a reference (mmseg 0.x) PSPNet checkpoint into urn's :class:`~urn.models.Segmentor`.

mmseg keys map onto ours by prefix, because urn keeps mmseg's layer names in the heads and the
upstream names in the backbones:

=====================================  ====================================================
mmseg                                  urn
=====================================  ====================================================
``backbone.stem.{0,1,3,4,6}.*``        ``backbone.model.conv1.{0,1,3,4,6}.*`` (ResNetV1c)
``backbone.stem.7.*``                  ``backbone.model.bn1.*``
``backbone.*`` (timm-based backbone)   ``backbone.model.*`` (ResNet, Res2Net: same names)
``backbone.*`` (WRN-38, ScaleNet)      ``backbone.*``
``decode_head.*``                      ``head.*`` (``psp_modules.N.1.conv``, ``bottleneck``, ``conv_seg``)
``auxiliary_head.*``                   ``aux_head.*`` (``convs.0.conv``, ``conv_seg``)
=====================================  ====================================================

The result is loaded into a freshly built model with ``strict=True``, so any key or shape that does
not fit is reported, never silently dropped. The auxiliary head's weights are dropped only when
the config has no auxiliary head (``model.aux_head=false``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from urn.config import Config, ModelConfig, config_to_dict
from urn.errors import UrnError
from urn.io import atomic_torch_save
from urn.models import build_segmentor
from urn.models.backbones.timm_backbone import TimmBackbone
from urn.models.backbones.weights import read_state_dict, rename_mmseg_stem, unwrap_state_dict

log = logging.getLogger(__name__)


def convert_reference_checkpoint(
    src: Mapping[str, Any] | str | Path, cfg: ModelConfig, num_classes: int | None = None
) -> dict[str, Tensor]:
    """Map an mmseg PSPNet checkpoint onto the model ``cfg`` describes.

    Args:
        src: the checkpoint file, or its loaded dict (``state_dict`` / ``module.`` wrappers allowed).
        cfg: the urn model the weights are for; its backbone ``weights``/``pretrained`` are ignored.
        num_classes: label slots; default: read from ``decode_head.conv_seg.weight``.

    Returns:
        the state dict of a :class:`~urn.models.Segmentor`, verified by a strict load.

    Raises:
        UrnError: unreadable file, or keys/shapes that do not fit (naming the first few).
    """
    where = str(src) if isinstance(src, (str, Path)) else "checkpoint"
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise UrnError(f"{path}: checkpoint not found")
        state = read_state_dict(path, backbone_only=False)
    else:
        state = unwrap_state_dict(dict(src), where, backbone_only=False)
    if num_classes is None:
        seg = state.get("decode_head.conv_seg.weight")
        if seg is None:
            raise UrnError(f"{where}: no decode_head.conv_seg.weight: not an mmseg segmentor checkpoint")
        num_classes = int(seg.shape[0])
    # Only the architecture matters: never load ImageNet weights that are overwritten anyway.
    arch = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=None, pretrained=False))
    model = build_segmentor(arch, num_classes)
    native = "backbone.model." if isinstance(model.backbone, TimmBackbone) else "backbone."

    backbone = rename_mmseg_stem(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    )
    out = {native + k: v for k, v in backbone.items()}
    dropped, unknown = [], []
    for k, v in state.items():
        if k.startswith("decode_head."):
            out["head." + k.removeprefix("decode_head.")] = v
        elif k.startswith("auxiliary_head."):
            if model.aux_head is None:
                dropped.append(k)
            else:
                out["aux_head." + k.removeprefix("auxiliary_head.")] = v
        elif not k.startswith("backbone."):
            unknown.append(k)

    own = model.state_dict()
    for k in own:  # BN step counters are absent from some exports and carry no weights
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = own[k]
    missing = [k for k in own if k not in out]
    unexpected = [k for k in out if k not in own] + unknown
    wrong = [k for k in own if k in out and tuple(out[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(
                f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            )
        if unexpected:
            more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
            parts.append(f"unexpected {', '.join(unexpected[:3])}{more}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} is {tuple(out[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model")
        hint = ""
        if "backbone.stem.0.weight" in state and cfg.backbone.name == "resnet101":
            hint = "; its deep stem (backbone.stem.*) needs model.backbone.name=resnet101c"
        raise UrnError(
            f"{where}: does not fit model.backbone.name={cfg.backbone.name}, model.head={cfg.head} "
            f"({'; '.join(parts)}){hint}"
        )
    model.load_state_dict(out, strict=True)
    if dropped:
        log.info("dropped %d auxiliary_head tensors (model.aux_head is off)", len(dropped))
    return model.state_dict()


def convert_checkpoint_file(
    inp: str | Path, out: str | Path, cfg: Config | ModelConfig, num_classes: int | None = None
) -> Path:
    """Convert a reference checkpoint file and write a urn checkpoint atomically.

    The output holds ``model`` (the state dict), ``num_classes``, ``kind`` and ``converted_from``,
    plus ``config`` when a whole :class:`~urn.config.Config` is given; ``urn eval`` and friends read
    its ``model`` like any training checkpoint.

    Returns:
        ``out`` as a Path.
    """
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    state = convert_reference_checkpoint(inp, model_cfg, num_classes)
    ckpt: dict[str, Any] = {
        "kind": "segmentor",
        "model": state,
        "num_classes": int(state["head.conv_seg.weight"].shape[0]),
        "converted_from": str(inp),
    }
    if isinstance(cfg, Config):
        ckpt["config"] = config_to_dict(cfg)
    out = Path(out)
    atomic_torch_save(out, ckpt)
    return out


__all__ = ["convert_checkpoint_file", "convert_reference_checkpoint"]
