"""Stage: CAMs of a split from a trained classifier (``urn cam infer``).

Artifact schema, one ``OUT/<id>.npz`` per image (``np.savez``, no pickled objects; read it with
:func:`read_cams`)::

    classes  int64 (K,)       contiguous class indices 1..C-1 of the image-level labels, ascending
    cams     float16 (K, H, W) normalised CAM of each, full image size, values in [0, 1]

Two view sets (URN_ALGORITHM.md 1.4): multi-scale + flip (``cam.scales``, PIL bicubic resize, the
flip pair batched) or, with ``cam.multi_crop``, the reference tiling (``cam.crop_scales``, tiles of
``cam.crop_size`` every ``cam.crop_stride``, quirk Q3 kept; all tiles + flips batched by
``cam.batch_views``). Each view's maps are resized to the image (tile box), flipped back and summed
(tiles: averaged by coverage). Then, per class: ReLU (a no-op for SEAM's non-negative refined CAM,
needed for a plain classifier), values ``< min + 1e-5`` -> 0, others ``(x - min) / (max - min + 1e-5)``.
Only tagged classes are kept (the reference multiplies by the tags, Q6).

With ``heat_out`` the stage-2 heat maps for heat-guided multi-crop training are written too:
``<id>.npz`` with ``classes`` and ``probs`` float16 (K + 1, H, W) (0 = background), the CRF of
``[(1 - max_k A_k) ** cam.heat_alpha, A_1..A_K]`` with the stage-2 CRF (gaussian compat 3).

Resumable (complete outputs are skipped, stale temp files of this rank's ids swept), sharded
(rank ``r`` of ``WORLD_SIZE`` takes ``ids[r::world]``). Never reads ground-truth masks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from urn import io
from urn.cam.data import multi_crop_boxes, normalize
from urn.cam.network import build_cam_net
from urn.cam.pmm import make_crf
from urn.config import CAMConfig, Config, config_from_dict
from urn.crf import PMM_STAGE2_CRF
from urn.data.layout import DatasetLayout
from urn.engine.checkpoint import load_checkpoint, model_state
from urn.errors import DataError, UrnError
from urn.progress import progress_bar

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- files
def save_cams(path: Path, classes: Sequence[int], cams: np.ndarray, key: str = "cams") -> None:
    """Write ``<id>.npz`` (``classes`` int64 (K,), ``cams`` float16 (K, H, W)) atomically, no pickle.

    ``key="probs"``: a heat map, ``probs`` float16 (K + 1, H, W).
    """
    with io.atomic_open(path) as fh:
        np.savez(fh, classes=np.asarray(classes, np.int64), **{key: np.asarray(cams, np.float16)})


def read_cams(path: Path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a CAM file: ``(classes (K,) int64, cams (K, H, W) float16)``.

    Args:
        path: the ``<id>.npz`` file.
        num_classes: when given, every class index must lie in ``1..num_classes - 1`` (foreground).

    Raises:
        DataError: missing, truncated, pickled or malformed file, class indices outside the class
            list, or NaN/inf in the maps.
    """
    if not path.is_file():
        raise DataError(path, "CAM file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            classes, cams = z["classes"], z["cams"]
    except io.NPZ_ERRORS as exc:
        raise DataError(path, f"unreadable CAM file ({str(exc)[:120] or type(exc).__name__})") from None
    if classes.ndim != 1 or cams.ndim != 3 or len(classes) != len(cams):
        raise DataError(path, f"malformed CAM file (classes {classes.shape}, cams {cams.shape})")
    if not np.issubdtype(classes.dtype, np.integer):
        raise DataError(path, f"CAM class indices must be integers, got {classes.dtype}")
    if num_classes is not None and len(classes) and (classes.min() < 1 or classes.max() >= num_classes):
        bad = sorted({int(k) for k in classes if not 1 <= k < num_classes})[:5]
        raise DataError(path, f"CAM class indices {bad} outside the foreground classes 1..{num_classes - 1}")
    if not np.isfinite(cams).all():
        raise DataError(path, "CAMs hold NaN or infinity")
    return classes.astype(np.int64), cams


def _complete(path: Path, classes: Sequence[int], size: tuple[int, int], key: str = "cams") -> bool:
    """A previous run's output is reusable: readable, right classes, right size."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arr = z[key]
            return list(z["classes"]) == list(classes) and tuple(arr.shape[1:]) == tuple(size)
    except io.NPZ_ERRORS:
        return False


# -------------------------------------------------------------------------------------------- CAMs
def normalize_cams(sum_cam: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` fused maps -> per-class min-max normalised maps in [0, 1] (float32).

    ReLU, then values ``< min + 1e-5`` -> 0 and the others ``(x - min) / (max - min + 1e-5)``.
    """
    x = np.maximum(np.asarray(sum_cam, np.float32), 0.0)
    if x.size == 0:
        return x
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    out = (x - lo) / (hi - lo + 1e-5)
    out[x < lo + 1e-5] = 0.0
    return out


def _forward(
    net: nn.Module, views: list[torch.Tensor], channels: list[int], batch: int, device: torch.device
) -> list[torch.Tensor]:
    """Class maps of same-sized views, ``batch`` at a time: list of ``(K, h, w)``."""
    out: list[torch.Tensor] = []
    for i in range(0, len(views), batch):
        x = torch.stack(views[i : i + batch]).to(device)
        out.extend(net.cam(x)[:, channels].float().cpu())
    return out


@torch.no_grad()
def compute_cams(
    net: nn.Module, image: np.ndarray, classes: Sequence[int], cfg: CAMConfig, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Normalised CAMs ``(K, H, W)`` float32 of the tagged ``classes`` for one ``(H, W, 3)`` uint8 image."""
    h, w = image.shape[:2]
    if len(classes) == 0:
        return np.zeros((0, h, w), np.float32)
    channels = [k - 1 for k in classes]  # the classifier's maps are foreground-only
    device = torch.device(device)
    pil = Image.fromarray(image)
    total = torch.zeros(len(classes), h, w)
    if not cfg.multi_crop:
        for s in cfg.scales:
            x = normalize(np.asarray(pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)))
            views = [x, x.flip(-1)] if cfg.flip else [x]
            for v, cam in enumerate(_forward(net, views, channels, max(1, cfg.batch_views), device)):
                cam = F.interpolate(cam[None], (h, w), mode="bilinear", align_corners=False)[0]
                total += cam.flip(-1) if v == 1 else cam
    else:
        count = torch.zeros(1, h, w)
        boxes = [
            b
            for per_scale in multi_crop_boxes(w, h, cfg.crop_scales, cfg.crop_size, cfg.crop_stride)
            for b in per_scale
        ]
        where = [(box, f) for box in boxes for f in ((False, True) if cfg.flip else (False,))]
        step = max(1, cfg.batch_views)
        for i in range(0, len(where), step):  # tiles are built per batch: 174 at once would be 400 MB
            chunk = where[i : i + step]
            views = [_tile(pil, box, cfg.crop_size, flipped) for box, flipped in chunk]
            for cam, ((x1, y1, x2, y2), flipped) in zip(
                _forward(net, views, channels, step, device), chunk, strict=True
            ):
                cam = F.interpolate(cam[None], (y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
                total[:, y1:y2, x1:x2] += cam.flip(-1) if flipped else cam
                count[:, y1:y2, x1:x2] += 1
        total /= count.clamp(min=1)
    return normalize_cams(total.numpy())


def _tile(pil: Image.Image, box: tuple[int, int, int, int], size: int, flipped: bool) -> torch.Tensor:
    """A tile of the original image resized to ``size`` x ``size`` (PIL bilinear), maybe mirrored."""
    x = normalize(np.asarray(pil.crop(box).resize((size, size), Image.BILINEAR)))
    return x.flip(-1) if flipped else x


def heat_map(image: np.ndarray, cams: np.ndarray, alpha: float, backend: str = "pydensecrf") -> np.ndarray:
    """Stage-2 heat map ``(K + 1, H, W)``: CRF (``PMM_STAGE2_CRF``, gaussian compat 3) of
    ``[(1 - max A) ** alpha, A_1..A_K]``."""
    h, w = image.shape[:2]
    if len(cams) == 0:
        return np.ones((1, h, w), np.float32)
    bg = np.power(1.0 - cams.max(axis=0, keepdims=True), alpha)
    return make_crf(PMM_STAGE2_CRF, backend)(image, [np.concatenate([bg, cams]).astype(np.float32)])[0]


# ------------------------------------------------------------------------------------------- stage
def shard_env(device: str | None = None) -> tuple[int, int, torch.device]:
    """``(rank, world, device)`` from the torchrun/Slurm environment, without a process group:
    inference stages only split the ids (``ids[rank::world]``) and never communicate.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (default: this rank's GPU when there is one).
    """
    from urn.engine.distributed import launch_env, resolve_device

    rank, world, local = launch_env()  # a world that cannot form is one line, before any output
    if torch.cuda.is_available():
        local %= torch.cuda.device_count()
    return rank, world, resolve_device(device, local)


def load_classifier(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the classifier stored in a ``urn cam train`` checkpoint (its own config), in eval mode."""
    ckpt = load_checkpoint(checkpoint)
    if "config" not in ckpt or "num_classes" not in ckpt:
        raise UrnError(f"{checkpoint}: not a `urn cam train` checkpoint (no config / num_classes)")
    trained = config_from_dict(ckpt["config"])
    # the checkpoint holds every weight: never download or read files (and so no init check to pass)
    backbone = dataclasses.replace(trained.cam.backbone, pretrained=False, weights=None, allow_random_init=True)
    cam_cfg = dataclasses.replace(trained.cam, backbone=backbone, freeze_stem=False)
    net = build_cam_net(cam_cfg, int(ckpt["num_classes"]))
    net.load_state_dict(model_state(ckpt))
    return net.to(device).eval(), trained


def run(
    cfg: Config,
    checkpoint: Path,
    split: str,
    out: Path,
    heat_out: Path | None = None,
    *,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Write the CAMs of ``split`` (this rank's share) to ``out``; returns ``out``.

    The view settings (scales, flip, multi-crop, batch) come from ``cfg.cam``; the network from the
    checkpoint's own config.
    """
    rank, world, dev = shard_env(device)
    out = Path(out)
    net, _ = load_classifier(Path(checkpoint), dev)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    trained_classes = net.num_classes
    if layout.classes.num_classes != trained_classes:
        raise UrnError(
            f"{checkpoint}: trained for {trained_classes} classes, the dataset has {layout.classes.num_classes}"
        )
    ids = layout.ids(split)[rank::world]
    labels = layout.image_labels()
    missing = [i for i in ids if i not in labels]
    if missing:
        raise DataError(
            layout.labels_file() or layout.root, f"no image-level labels for {len(missing)} ids, e.g. {missing[0]!r}"
        )
    folders = [out] + ([Path(heat_out)] if heat_out is not None else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps_of(folder, (f"{i}.npz" for i in ids))  # this rank's ids only
    bar = progress_bar(total=len(ids), desc=f"cam infer {split}", unit="img", disable=quiet or rank != 0)
    done = 0
    for image_id in ids:
        classes = list(labels[image_id])
        size = layout.image_size(image_id)
        cam_path, heat_path = out / f"{image_id}.npz", (Path(heat_out) / f"{image_id}.npz" if heat_out else None)
        need_cam = not _complete(cam_path, classes, size)
        need_heat = heat_path is not None and not _complete(heat_path, classes, size, key="probs")
        if need_cam or need_heat:
            image = layout.read_image(image_id)
            if need_cam:
                cams = compute_cams(net, image, classes, cfg.cam, dev)
                save_cams(cam_path, classes, cams)
            else:
                cams = read_cams(cam_path)[1].astype(np.float32)
            if need_heat:
                probs = heat_map(
                    image, cams.astype(np.float16).astype(np.float32), cfg.cam.heat_alpha, cfg.pmm.crf_backend
                )
                save_cams(heat_path, classes, probs, key="probs")
            done += 1
        bar.update(1)
    bar.close()
    log.info("cam infer %s: %d images written, %d already complete", split, done, len(ids) - done)
    return out
