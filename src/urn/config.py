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

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from urn.errors import ConfigError

# ------------------------------------------------------------------------------------------ sections


@dataclass
class DataConfig:
    """Where the dataset lives and how training samples are drawn."""

    root: str = "data/demo"
    layout: Literal["auto", "voc", "coco"] = "auto"
    train_split: str = "train"
    val_split: str = "val"
    classes_file: str | None = None  # default: ROOT/classes.txt, else VOC's 21 (COCO: its 81)
    pseudo_masks: str | None = None  # training targets: folder of PNG class indices (255 = ignore)
    # Seg-2 per-pixel loss weights: folder of <id>.npy normalised uncertainty U (weight = 1 - U), as
    # `urn uncertainty` writes, or of the reference's 3-channel [label, w, w] PNGs.
    uncertainty: str | None = None
    fully_supervised: bool = False  # train on ground truth: the upper bound, never the default
    base_size: tuple[int, int] = (2048, 512)  # mmseg img_scale (long, short) bound
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: int = 512
    cat_max_ratio: float = 0.75
    photometric: bool = True
    skip_bad_samples: int = 0  # how many unreadable samples training may skip (logged) before it stops
    num_workers: int = 2


@dataclass
class BackboneConfig:
    """A timm (or urn-native) backbone, made output-stride 8 by dilation."""

    name: str = "resnet18"
    output_stride: int = 8
    pretrained: bool = False  # from timm's hub (needs network)
    weights: str | None = None  # local file: timm / torchvision / reference state dict
    # BN running statistics frozen at their ImageNet values, scale and shift still trained (mmseg's
    # norm_eval=True: the reference's ResNet-101 configs; its Res2Net / ScaleNet / WR38 train them)
    norm_eval: bool = False


@dataclass
class ModelConfig:
    """Segmentor: backbone + decode head + optional auxiliary FCN head."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: str = "psp"
    head_channels: int = 512
    aux_head: bool = True
    aux_channels: int = 256
    aux_weight: float = 0.4
    dropout: float = 0.1
    sync_bn: bool = False


@dataclass
class PUSConfig:
    """Pretended Under-fitting Strategy (PMM): clamp per-pixel losses once the mean loss is low."""

    enabled: bool = False
    type: Literal["clamp", "pow", "ignore"] = "clamp"
    beta: float = 0.5
    k: float = 0.5


@dataclass
class TrainConfig:
    """Iteration-based SGD training of a segmentor."""

    iters: int = 20000
    batch_size: int = 16  # global batch (split across ranks)
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    min_lr: float = 1e-4
    head_lr_mult: float = 1.0  # the reference uses one LR for all parameters
    pus: PUSConfig = field(default_factory=PUSConfig)
    weighting: Literal["none", "hard", "soft"] = "none"  # Seg-2 uncertainty weighting
    weight_thresh: float = 0.05
    valid_mean: bool = True  # divide the loss by valid pixels (False: the reference's mean over all)
    amp: bool = True  # used on CUDA only
    channels_last: bool = False
    grad_clip: float | None = None
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 2000
    val_every: int = 2000  # 0 disables periodic validation


@dataclass
class CRFConfig:
    """Dense CRF with Potts compatibilities (parameters of URN's main/uncertainty CRF)."""

    # false: no dense CRF after inference (evaluation, prediction), whatever infer.crf says; the
    # uncertainty stage, which is the CRF's response to scaled scores (spec section 3), then refuses to run.
    # PMM's CRFs (pmm.crf_*) are separate.
    enabled: bool = True
    backend: Literal["auto", "pydensecrf", "batched"] = "auto"
    iters: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    prob_floor: float = 1e-5


@dataclass
class InferConfig:
    """Test-time inference: whole image or sliding window, multi-scale + flip, CRF."""

    mode: Literal["whole", "slide"] = "slide"
    crop_size: int = 512
    stride: int = 480
    base_size: tuple[int, int] = (2048, 512)
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True
    crf: bool = True  # dense CRF on the averaged probabilities (only while crf.enabled)
    batch_views: int = 4  # views of one size (a scale and its flip, or sliding windows) per forward


@dataclass
class UncertaintyConfig:
    """Response scaling: exponents, weights and the options the reference lacks."""

    split: str = "train"
    exponents: tuple[float, ...] = (0.15, 0.2, 0.25, 4.0, 5.0, 6.0)
    restrict_to_tags: bool = False
    keep_original_mask: bool = False
    reference_format: bool = False


@dataclass
class CAMConfig:
    """Multi-label CAM classifier and CAM inference."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet18", output_stride=16))
    network: Literal["plain", "seam"] = "plain"
    iters: int = 2000
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    head_lr_mult: float = 10.0
    crop_size: int = 448
    resize_long: tuple[int, int] = (448, 768)
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    multi_crop: bool = False
    # Q1: PMM's PolyOptimizer puts weight_decay into SGD's momentum slot, so the reference trains
    # with momentum = weight_decay (~0). Its learning rates (x2 biases, x10/x20 head) were tuned
    # that way, and momentum 0.9 on top multiplies the effective step by ~10, so True is the
    # default: `momentum` is then ignored. False uses `momentum` as written.
    momentum_quirk: bool = True
    head_dropout: float = 0.0  # Dropout2d before the classifier (WRN-38 reference: 0.5)
    freeze_bn: bool = False  # backbone norm layers in eval mode, affine frozen (reference: True)
    freeze_stem: bool = False  # stem + first stage frozen (reference: True)
    seam_scale: float = 0.3  # size ratio of SEAM's second view
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    heat_dir: str | None = None  # heat maps (`urn cam infer --heat-out`): heat-guided multi-crop training
    crop_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)
    crop_stride: int = 300  # multi-crop tiling stride (tiles are crop_size)
    batch_views: int = 8  # inference: views (scales/flips/tiles) per forward
    heat_alpha: float = 24.0  # background power of the heat-map CRF (stage 2)
    num_workers: int = 2
    eval_val: bool = True  # classification mAP/F1 on data.val_split at the end of training


@dataclass
class PMMConfig:
    """Pseudo-masks from CAMs: CVS + per-class CRF + PPMG (or the plain threshold baseline)."""

    method: Literal["pmm", "threshold", "threshold_crf"] = "pmm"
    cam_thresh: float = 0.05
    cv_scale: float = 0.3
    # alpha of the background score (1 - Â) ** alpha; "auto": the label-free rule of docs/cam.md (Otsu's
    # threshold of the split's smoothed CAM values, turned into the alpha that crosses there)
    bg_power: float | Literal["auto"] = 11.0
    bg_threshold: float = 0.15
    low_confidence_ignore: float | None = None
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 10.0
    crf_bilateral_sxy: float = 80.0
    crf_bilateral_srgb: float = 13.0
    crf_bilateral_compat: float = 10.0
    crf_iters: int = 10
    # pydensecrf: measured 3-30x faster than urn.crf's batched backend on PMM's few 2-label problems
    crf_backend: Literal["auto", "pydensecrf", "batched"] = "pydensecrf"
    num_workers: int = 0  # worker processes for CRF + merging (0: in process)


@dataclass
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
    return cfg


def set_by_path(cfg: Any, dotted: str, value: Any, where: str = "command line") -> None:
    """Set ``cfg.a.b.c = value`` with type checking. Raises :class:`ConfigError` on a bad key/type."""
    parts = dotted.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(obj)}
        path = ".".join(parts[: i + 1])
        if part not in names:
            raise ConfigError(f"{where}: unknown key '{path}' (allowed: {', '.join(names)})")
        if i == len(parts) - 1:
            hint = _field_types(type(obj))[part]
            section = getattr(obj, part)
            if dataclasses.is_dataclass(section):
                if not isinstance(value, dict):
                    keys = ", ".join(f.name for f in dataclasses.fields(section))
                    raise ConfigError(f"{where}: '{path}' is a section; set one of its keys ({keys})")
                _merge(section, value, prefix=path + ".", where=where)
            else:
                setattr(obj, part, _coerce(value, hint, path, where))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{where}: '{path}' is a value, not a section")


def _merge(obj: Any, data: dict[str, Any], prefix: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a mapping")
    for key, value in data.items():
        names = {f.name for f in dataclasses.fields(obj)}
        path = prefix + str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{path}' (allowed: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{path}' is a section; give it a mapping")
            _merge(current, value, prefix=path + ".", where=where)
        else:
            setattr(obj, key, _coerce(value, _field_types(type(obj))[key], path, where))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
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
