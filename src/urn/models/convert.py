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

Class rows: the reference's COCO models classify 91 slots, one per raw label value 0..90 (10 of the
category ids are never used), while urn's COCO model has the 81 classes of its class list
(:mod:`urn.data.classes`). Given the class list, a checkpoint with one row per raw label value
(``max_raw_id + 1`` rows) keeps the rows of the list's raw ids, in its order (``conv_seg`` of both
heads); the 10 unused slots are dropped, which changes no prediction on COCO data (their ids never
occur in the ground truth).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from urn.config import Config, ModelConfig, config_to_dict
from urn.data.classes import ClassList
from urn.errors import DataError, UrnError
from urn.io import atomic_torch_save
from urn.models import build_segmentor
from urn.models.backbones.timm_backbone import TimmBackbone
from urn.models.backbones.weights import read_state_dict, rename_mmseg_stem, unwrap_state_dict

log = logging.getLogger(__name__)

CLASS_ROW_KEYS = (
    "decode_head.conv_seg.weight",
    "decode_head.conv_seg.bias",
    "auxiliary_head.conv_seg.weight",
    "auxiliary_head.conv_seg.bias",
)


def select_class_rows(state: dict[str, Tensor], classes: ClassList) -> dict[str, Tensor]:
    """Keep the class rows of ``classes`` from a checkpoint that has one row per raw label value.

    Applies when ``classes`` has non-contiguous raw ids and ``decode_head.conv_seg`` has exactly
    ``max_raw_id + 1`` rows, row ``r`` for raw id ``r`` (the reference's COCO models: 91 rows for
    raw ids 0..90): the rows ``classes.raw_ids`` are kept, in that order, in both heads. Any other
    state is returned as is (a row count that fits neither is then reported by the strict load).
    """
    seg = state.get(CLASS_ROW_KEYS[0])
    if seg is None or classes.is_identity:
        return state
    rows = int(seg.shape[0])
    if rows == classes.num_classes or rows != classes.max_raw_id + 1:
        return state
    keep = list(classes.raw_ids)
    out = dict(state)
    for key in CLASS_ROW_KEYS:
        if key in out and int(out[key].shape[0]) == rows:
            out[key] = out[key][keep].clone()
    log.info("kept %d of %d class rows (the raw ids of the class list)", classes.num_classes, rows)
    return out


def classes_of_config(cfg: Config) -> ClassList | None:
    """The class list a config trains on, without needing the dataset on disk.

    ``data.classes_file`` if set; else the dataset's own (``DatasetLayout.open``) if ``data.root``
    exists; else COCO's 81 for ``data.layout: coco``, VOC's 21 for ``voc``; None for ``auto``
    without a dataset.
    """
    from urn.data.classes import coco, read_classes_file, voc
    from urn.data.layout import DatasetLayout

    d = cfg.data
    if d.classes_file:
        return read_classes_file(d.classes_file)
    if Path(d.root).is_dir():
        try:
            return DatasetLayout.open(d.root, d.layout).classes
        except DataError:
            pass
    return {"coco": coco, "voc": voc}.get(d.layout, lambda: None)()


def convert_reference_checkpoint(
    src: Mapping[str, Any] | str | Path,
    cfg: ModelConfig,
    num_classes: int | None = None,
    classes: ClassList | None = None,
) -> dict[str, Tensor]:
    """Map an mmseg PSPNet checkpoint onto the model ``cfg`` describes.

    Args:
        src: the checkpoint file, or its loaded dict (``state_dict`` / ``module.`` wrappers allowed).
        cfg: the urn model the weights are for; its backbone ``weights``/``pretrained`` are ignored.
        num_classes: label slots; default: read from ``decode_head.conv_seg.weight`` (after the
            row selection below).
        classes: the class list of the model; a checkpoint with one row per raw label value (the
            reference's 91-row COCO models) keeps the rows of its raw ids (:func:`select_class_rows`).

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
    if classes is not None:
        state = select_class_rows(state, classes)
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


def convert_checkpoint_file(inp: str | Path, out: str | Path, cfg: Config | ModelConfig) -> Path:
    """Convert a reference checkpoint file and write a urn checkpoint atomically.

    The output holds ``model`` (the state dict), ``num_classes``, ``kind`` and ``converted_from``,
    plus ``config`` when a whole :class:`~urn.config.Config` is given; ``urn eval`` and friends read
    its ``model`` like any training checkpoint. With a whole config, the class rows are matched to its
    class list (:func:`classes_of_config`): a reference COCO checkpoint's 91 rows become the 81 classes.

    Returns:
        ``out`` as a Path.
    """
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    classes = classes_of_config(cfg) if isinstance(cfg, Config) else None
    state = convert_reference_checkpoint(inp, model_cfg, classes=classes)
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


__all__ = ["classes_of_config", "convert_checkpoint_file", "convert_reference_checkpoint", "select_class_rows"]
