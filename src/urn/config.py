"""Typed configuration: dataclasses loaded from YAML with dotted command-line overrides.

One :class:`Config` holds a section per stage. A YAML file (or a shipped preset, by name) sets any
subset of fields; ``base: <preset or path>`` at the top of a file starts from another file first (one
flat chain, read top to bottom). Command-line overrides such as ``model.backbone.name=resnet18`` or
``train.iters=200`` come last. Every value is checked against the field's type; an unknown key or a
wrong type is a :class:`~urn.errors.ConfigError` that names the key and what is allowed.

Example::

    cfg = load_config("demo", ["train.iters=50", "data.root=/data/voc"])
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from urn import reference_values as ref
from urn.crf.params import PMM_CRF, CRFParams
from urn.errors import ConfigError

# ------------------------------------------------------------------------------------------ value ranges
# What each value may be is declared at its field (``ruled``); check_values tests every loaded config. A
# rule is (test of one number, phrase saying what is allowed); sequences are checked item by item.
_Rule = tuple[typing.Callable[[float], bool], str]


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


_POS: _Rule = (lambda x: _finite(x) and x > 0, "a finite number > 0")
_NONNEG: _Rule = (lambda x: _finite(x) and x >= 0, "a finite number >= 0")
_UNIT: _Rule = (lambda x: _finite(x) and 0 <= x <= 1, "a number in [0, 1]")
_FRACTION_OPEN: _Rule = (lambda x: _finite(x) and 0 < x <= 1, "a number in (0, 1]")
_DROPOUT: _Rule = (lambda x: _finite(x) and 0 <= x < 1, "a number in [0, 1)")
_FLOOR: _Rule = (lambda x: _finite(x) and 0 < x < 1, "a number in (0, 1)")
_ANY: _Rule = (_finite, "a finite number")
_INT1: _Rule = (lambda x: x >= 1, "an integer >= 1")
_INT0: _Rule = (lambda x: x >= 0, "an integer >= 0")
_CROP: _Rule = (lambda x: x >= 8, "an integer >= 8 (pixels)")
_STRIDE: _Rule = (lambda x: x in (8, 16, 32), "one of 8, 16, 32")


def ruled(default: Any, rule: _Rule, *, ordered: bool = False, non_empty: bool = False) -> Any:
    """A config field with ``default`` whose value (each item, for a list) must pass ``rule``.

    ``ordered``: a (lo, hi) pair with lo <= hi; ``non_empty``: a list with at least one value.
    """
    return field(default=default, metadata={"rule": rule, "ordered": ordered, "non_empty": non_empty})


#: The rules of a CRFParams section (URN's ``crf`` and PMM's ``pmm.crf``): its fields are the CRF's own.
_CRF_RULES: dict[str, _Rule] = {
    "iters": _INT1,
    "gaussian_sxy": _POS,
    "gaussian_compat": _NONNEG,
    "bilateral_sxy": _POS,
    "bilateral_srgb": _POS,
    "bilateral_compat": _NONNEG,
    "prob_floor": _FLOOR,
}


# ------------------------------------------------------------------------------------------ sections


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset lives and how training samples are drawn."""

    root: str = "data/demo"
    layout: Literal["auto", "voc", "coco"] = "auto"
    train_split: str = "train"
    val_split: str = "val"
    # `urn run` exports Seg-2's predictions of this split for the evaluation server (VOC: "test"),
    # when the dataset has its split file; None: no export.
    test_split: str | None = None
    classes_file: str | None = None  # default: ROOT/classes.txt, else VOC's 21 (COCO: its 81)
    pseudo_masks: str | None = None  # training targets: folder of PNG class indices (255 = ignore)
    # Seg-2 per-pixel loss weights: folder of <id>.npy normalised uncertainty U (weight = 1 - U), as
    # `urn uncertainty` writes, or of the reference's 3-channel [label, w, w] PNGs.
    uncertainty: str | None = None
    fully_supervised: bool = False  # train on ground truth: the upper bound, never the default
    base_size: tuple[int, int] = ruled((2048, 512), _INT1)  # mmseg img_scale (long, short) bound
    ratio_range: tuple[float, float] = ruled((0.5, 2.0), _POS, ordered=True)
    crop_size: int = ruled(512, _CROP)
    cat_max_ratio: float = ruled(0.75, _FRACTION_OPEN)
    photometric: bool = True
    skip_bad_samples: int = ruled(0, _INT0)  # how many unreadable samples training may skip (logged) before it stops
    num_workers: int = ruled(2, _INT0)


@dataclass(frozen=True)
class BackboneConfig:
    """A timm (or urn-native) backbone, made output-stride 8 by dilation."""

    name: str = "resnet18"
    output_stride: int = ruled(8, _STRIDE)
    pretrained: bool = False  # from timm's hub (needs network)
    weights: str | None = None  # local file: timm / torchvision / reference state dict
    # BN running statistics frozen at their ImageNet values, scale and shift still trained (mmseg's
    # norm_eval=True: the reference's ResNet-101 configs; its Res2Net / ScaleNet / WR38 train them)
    norm_eval: bool = False
    # per-stage dilations instead of those output_stride implies (ScaleNet-101 only): PMM's CAM classifier
    # runs ScaleNet-101 at stride 8 undilated, (1, 1, 1, 1); the segmentation backbone at (1, 1, 2, 4)
    dilations: tuple[int, ...] | None = None
    # false: refuse to build the backbone from random initialisation (neither weights nor pretrained set);
    # the reference presets set false, since the reference always starts from ImageNet weights
    allow_random_init: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Segmentor: backbone + decode head + optional auxiliary FCN head."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: str = "psp"
    head_channels: int = ruled(512, _INT1)
    aux_head: bool = True
    aux_channels: int = ruled(256, _INT1)
    aux_weight: float = ruled(0.4, _NONNEG)
    dropout: float = ruled(0.1, _DROPOUT)
    sync_bn: bool = False


@dataclass(frozen=True)
class PUSConfig:
    """Pretended Under-fitting Strategy (PMM): clamp per-pixel losses once the mean loss is low."""

    enabled: bool = False
    type: Literal["clamp", "pow", "ignore"] = "clamp"
    beta: float = ruled(0.5, _ANY)
    k: float = ruled(0.5, _ANY)


@dataclass(frozen=True)
class TrainConfig:
    """Iteration-based SGD training of a segmentor."""

    iters: int = ruled(20000, _INT1)
    batch_size: int = ruled(16, _INT1)  # global batch (split across ranks)
    lr: float = ruled(0.005, _POS)
    momentum: float = ruled(0.9, _NONNEG)
    weight_decay: float = ruled(5e-4, _NONNEG)
    poly_power: float = ruled(0.9, _NONNEG)
    min_lr: float = ruled(1e-4, _NONNEG)
    head_lr_mult: float = ruled(1.0, _POS)  # the reference uses one LR for all parameters
    pus: PUSConfig = field(default_factory=PUSConfig)
    weighting: Literal["none", "hard", "soft"] = "none"  # Seg-2 uncertainty weighting
    weight_thresh: float = ruled(0.05, _UNIT)
    # "class": rescale the uncertainty weights so that every class of the batch keeps its total weight
    # (URN_ALGORITHM.md has no such step; "none" is the reference). See losses.balance_per_class.
    weight_balance: Literal["none", "class"] = "none"
    valid_mean: bool = True  # divide the loss by valid pixels (False: the reference's mean over all)
    amp: bool = True  # used on CUDA only
    channels_last: bool = False
    grad_clip: float | None = ruled(None, _POS)
    seed: int = 0
    log_every: int = ruled(10, _INT1)
    ckpt_every: int = ruled(2000, _INT1)
    val_every: int = ruled(2000, _INT0)  # 0 disables periodic validation


@dataclass(frozen=True)
class CRFConfig(CRFParams):
    """URN's main and uncertainty CRF: its :class:`~urn.crf.CRFParams` (defaults: the reference's), plus
    whether and how it runs. A ``CRFParams`` itself, so the stages hand the section to the CRF as it is."""

    # false: no dense CRF after inference (evaluation, prediction), whatever infer.crf says; the
    # uncertainty stage, which is the CRF's response to scaled scores (spec section 3), then refuses to run.
    # PMM's CRFs (pmm.crf) are separate.
    enabled: bool = True
    backend: Literal["auto", "pydensecrf", "batched"] = "auto"


@dataclass(frozen=True)
class InferConfig:
    """Test-time inference: whole image or sliding window, multi-scale + flip, CRF."""

    mode: Literal["whole", "slide"] = "slide"
    crop_size: int = ruled(512, _CROP)
    stride: int = ruled(480, _INT1)
    base_size: tuple[int, int] = ruled((2048, 512), _INT1)
    scales: tuple[float, ...] = ruled((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), _POS, non_empty=True)
    flip: bool = True
    crf: bool = True  # dense CRF on the averaged probabilities (only while crf.enabled)
    # Views of one size (a scale and its flip, or sliding windows) per forward. None (default):
    # urn.engine.inference.auto_batch_views decides (4 on a GPU; on CPU only small views share one).
    batch_views: int | None = ruled(None, _INT1)


@dataclass(frozen=True)
class UncertaintyConfig:
    """Response scaling: exponents, weights and the options the reference lacks."""

    split: str = "train"
    exponents: tuple[float, ...] = ruled(ref.VOC_EXPONENTS, _POS, non_empty=True)
    restrict_to_tags: bool = False
    keep_original_mask: bool = False
    reference_format: bool = False


@dataclass(frozen=True)
class CAMConfig:
    """Multi-label CAM classifier and CAM inference."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet18", output_stride=16))
    network: Literal["plain", "seam"] = "plain"
    iters: int = ruled(2000, _INT1)
    batch_size: int = ruled(16, _INT1)
    lr: float = ruled(0.01, _POS)
    momentum: float = ruled(0.9, _NONNEG)
    weight_decay: float = ruled(5e-4, _NONNEG)
    poly_power: float = ruled(0.9, _NONNEG)
    head_lr_mult: float = ruled(10.0, _POS)
    crop_size: int = ruled(448, _CROP)
    resize_long: tuple[int, int] = ruled((448, 768), _INT1, ordered=True)
    seed: int = 0
    log_every: int = ruled(10, _INT1)
    ckpt_every: int = ruled(500, _INT1)
    scales: tuple[float, ...] = ruled((1.0, 0.5, 1.5, 2.0), _POS, non_empty=True)
    flip: bool = True
    multi_crop: bool = False
    # Q1: PMM's PolyOptimizer puts weight_decay into SGD's momentum slot, so the reference trains
    # with momentum = weight_decay (~0). Its learning rates (x2 biases, x10/x20 head) were tuned
    # that way, and momentum 0.9 on top multiplies the effective step by ~10, so True is the
    # default: `momentum` is then ignored. False uses `momentum` as written.
    momentum_quirk: bool = True
    head_dropout: float = ruled(0.0, _DROPOUT)  # Dropout2d before the classifier (WRN-38 reference: 0.5)
    freeze_bn: bool = False  # backbone norm layers in eval mode, affine frozen (reference: True)
    freeze_stem: bool = False  # stem + first stage frozen (reference: True)
    seam_scale: float = ruled(0.3, _POS)  # size ratio of SEAM's second view
    color_jitter: tuple[float, float, float, float] = ruled((0.3, 0.3, 0.3, 0.1), _NONNEG)
    heat_dir: str | None = None  # heat maps (`urn cam infer --heat-out`): heat-guided multi-crop training
    # `urn run`: the config (preset or YAML) of a stage-1 classifier that the pipeline trains first; its
    # heat maps then guide this classifier's multi-crop training (PMM's VOC chain: cam_voc12_wr38).
    heat_stage: str | None = None
    crop_scales: tuple[float, ...] = ruled(
        (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0), _POS, non_empty=True
    )
    crop_stride: int = ruled(300, _INT1)  # multi-crop tiling stride (tiles are crop_size)
    batch_views: int = ruled(8, _INT1)  # inference: views (scales/flips/tiles) per forward
    heat_alpha: float = ruled(24.0, _POS)  # background power of the heat-map CRF (stage 2)
    num_workers: int = ruled(2, _INT0)
    eval_val: bool = True  # classification mAP/F1 on data.val_split at the end of training


@dataclass(frozen=True)
class PMMConfig:
    """Pseudo-masks from CAMs: CVS + per-class CRF + PPMG (or the plain threshold baseline)."""

    method: Literal["pmm", "threshold", "threshold_crf"] = "pmm"
    cam_thresh: float = ruled(0.05, _UNIT)
    cv_scale: float = ruled(0.3, _POS)
    # alpha of the background score (1 - Â) ** alpha; "auto": the label-free rule of docs/cam.md (Otsu's
    # threshold of the split's smoothed CAM values, turned into the alpha that crosses there)
    bg_power: float | Literal["auto"] = ruled(11.0, _POS)
    bg_threshold: float = ruled(0.15, _UNIT)
    low_confidence_ignore: float | None = ruled(None, _UNIT)
    # the per-class two-label CRF of the merging (spec 1.6); a copy per config, since loading sets fields
    crf: CRFParams = field(default_factory=lambda: dataclasses.replace(PMM_CRF))
    # pydensecrf: measured 3-30x faster than urn.crf's batched backend on PMM's few 2-label problems
    crf_backend: Literal["auto", "pydensecrf", "batched"] = "pydensecrf"
    num_workers: int = ruled(0, _INT0)  # worker processes for CRF + merging (0: in process)


@dataclass(frozen=True)
class Config:
    """Everything one pipeline run needs."""

    name: str = "custom"
    phase: Literal["seg1", "seg2"] = "seg1"  # which schedule `urn train` uses: `train` or `seg2`
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seg2: TrainConfig = field(default_factory=lambda: TrainConfig(weighting="hard"))
    crf: CRFConfig = field(default_factory=CRFConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    cam: CAMConfig = field(default_factory=CAMConfig)
    pmm: PMMConfig = field(default_factory=PMMConfig)


# ------------------------------------------------------------------------------------------- loading
PRESET_PACKAGE = "urn.presets"
#: Keys of earlier urn versions -> where they are now; YAML files, overrides and the configs stored in
#: checkpoints that use them still load.
RENAMED = {f"pmm.crf_{name}": f"pmm.crf.{name}" for name in ref.PMM_CRF}


def list_presets() -> list[str]:
    """Names of the shipped presets (YAML files in ``urn/presets``)."""
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> tuple[dict[str, Any], str]:
    """Load a YAML mapping from a path or preset name. Returns (mapping, description)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{source}: config file not found")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        res = resources.files(PRESET_PACKAGE) / f"{source}.yaml"
        if not res.is_file():
            raise ConfigError(f"{source}: neither a YAML file nor a preset (presets: {', '.join(list_presets())})")
        text = res.read_text(encoding="utf-8")
        where = f"preset {source}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}:{line} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping of sections")
    return data, where


def load_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from defaults, a YAML file or preset (with its ``base`` chain), and
    ``a.b=value`` overrides, in that order."""
    cfg = Config()
    if source is not None:
        chain: list[tuple[dict[str, Any], str]] = []
        seen: set[str] = set()
        current: str | None = source
        while current is not None:
            if current in seen:
                raise ConfigError(f"{current}: 'base' chain loops back on itself")
            seen.add(current)
            data, where = _read_yaml(current)
            base = data.pop("base", None)
            chain.append((data, where))
            if base is not None and not isinstance(base, str):
                raise ConfigError(f"{where}: 'base' must name a preset or a YAML path")
            if base is not None and Path(current).exists() and not Path(base).is_absolute():
                candidate = Path(current).parent / base
                base = str(candidate) if candidate.exists() else base
            current = base
        for data, where in reversed(chain):
            _merge(cfg, data, prefix="", where=where)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        set_by_path(cfg, key.strip(), value, where="command line")
    check_values(cfg, _where_set(chain if source is not None else [], [o.partition("=")[0].strip() for o in overrides]))
    return cfg


def with_values(cfg: Config, values: dict[str, Any], where: str = "command line") -> Config:
    """A copy of ``cfg`` with dotted keys set (``{"pmm.method": "threshold"}``), coerced and checked like
    command-line overrides. Configs are frozen once loaded: this is how a stage derives another one.

    Raises:
        ConfigError: an unknown key or a value of the wrong type or range.
    """
    new = copy.deepcopy(cfg)
    for key, value in values.items():
        set_by_path(new, key, value, where=where)
    check_values(new, lambda path: where)
    return new


def _set(obj: Any, name: str, value: Any) -> None:
    """Assign a field of a frozen config while it is being built (loading and :func:`with_values` only)."""
    object.__setattr__(obj, name, value)


def set_by_path(cfg: Any, dotted: str, value: Any, where: str = "command line") -> None:
    """Set ``cfg.a.b.c = value`` in a config being built, with type checking (use :func:`with_values` on a
    loaded config). Raises :class:`ConfigError` on a bad key/type."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    _merge(cfg, value, prefix="", where=where)


def _merge(obj: Any, data: dict[str, Any], prefix: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a mapping")
    for key, value in data.items():
        names = [f.name for f in dataclasses.fields(obj)]
        path = prefix + str(key)
        if path in RENAMED:  # an old key: set it where it lives now
            section, name = RENAMED[path][len(prefix) :].split(".")
            _merge(getattr(obj, section), {name: value}, prefix=f"{prefix}{section}.", where=where)
            continue
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{path}' (allowed: {', '.join(names)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                keys = ", ".join(f.name for f in dataclasses.fields(current))
                raise ConfigError(f"{where}: '{path}' is a section; set one of its keys ({keys})")
            _merge(current, value, prefix=path + ".", where=where)
        elif isinstance(value, dict):
            raise ConfigError(f"{where}: '{path}' is a value, not a section")
        else:
            _set(obj, key, _coerce(value, typing.get_type_hints(type(obj))[key], path, where))


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} values"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


#: The YAML values each scalar field type accepts (bool is an int to Python, but never accepted as one).
_SCALARS: dict[Any, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float), str: (str, int, float)}


def _coerce(value: Any, hint: Any, path: str, where: str) -> Any:
    """Check/convert a YAML value to the field type ``hint``."""

    def fail() -> ConfigError:
        return ConfigError(f"{where}: '{path}' must be {_type_name(hint)}, got {value!r}")

    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, where)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], path, where) for v in value)
        if len(value) != len(args):
            raise fail()
        return tuple(_coerce(v, a, path, where) for v, a in zip(value, args, strict=True))
    accepted = _SCALARS.get(hint, ())
    if isinstance(value, accepted) and (hint is bool or not isinstance(value, bool)):
        return hint(value)
    raise fail()


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (tuples as lists), for YAML/JSON dumps and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`config_to_dict` (used to restore the config stored in a checkpoint)."""
    cfg = Config()
    _merge(cfg, data, prefix="", where="stored config")
    return cfg


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def _fmt(value: Any) -> str:
    """A value as the message shows it: ``nan``/``inf`` as YAML users write them, lists in brackets."""
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def check_values(cfg: Config, where_of: typing.Callable[[str], str] = lambda path: "config") -> None:
    """Check every ruled value (:func:`ruled`, and a CRF section's :data:`_CRF_RULES`) and every float for
    being finite, on a loaded config.

    Raises:
        ConfigError: ``<where>: '<path>' must be <rule>, got <value>``, ``where_of(path)`` naming the
            file or the command line that set the value.
    """

    def fail(path: str, phrase: str, value: Any) -> ConfigError:
        return ConfigError(f"{where_of(path)}: '{path}' must be {phrase}, got {_fmt(value)}")

    for path, value, meta in _all_values(cfg, ""):
        items = value if isinstance(value, tuple) else (value,)
        rule = meta.get("rule")
        # optional (None) and named modes ("auto") are not numbers to rule on
        if rule is not None and value is not None and not isinstance(value, str):
            test, phrase = rule
            if not isinstance(value, tuple):
                if not test(value):
                    raise fail(path, phrase, value)
            elif not value and meta.get("non_empty"):
                raise fail(path, f"a non-empty list of values, each {phrase}", value)
            elif not all(test(v) for v in value):
                raise fail(path, f"a list of values, each {phrase}", value)
            elif meta.get("ordered") and value[0] > value[1]:
                raise fail(path, "[lo, hi] with lo <= hi", value)
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):  # no NaN or infinity anywhere
            raise fail(
                path, "a finite number" if items is not value else "a list of values, each a finite number", value
            )


def _all_values(obj: Any, prefix: str) -> typing.Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """``(dotted path, value, the field's metadata)`` of every value of a config, in field order."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _all_values(value, prefix + f.name + ".")
        elif isinstance(obj, CRFParams) and f.name in _CRF_RULES:
            yield prefix + f.name, value, {"rule": _CRF_RULES[f.name]}
        else:
            yield prefix + f.name, value, f.metadata


def _where_set(chain: list[tuple[dict[str, Any], str]], overridden: list[str]) -> typing.Callable[[str], str]:
    """``path -> where it was set``: the command line, else the last file of the chain that sets it,
    else the config given (its default came from the code)."""

    def where_of(path: str) -> str:
        if any(path == key or path.startswith(key + ".") for key in overridden):
            return "command line"
        for data, where in chain:  # chain[0] is the file given; later entries are its bases
            node: Any = data
            for part in path.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                return where
        return chain[0][1] if chain else "defaults"

    return where_of


_MISSING = object()
