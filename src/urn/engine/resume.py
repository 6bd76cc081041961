"""What a training does with an output folder that already holds a run: one policy for every training.

``urn train`` (Seg-1 / Seg-2), ``urn cam train`` and the pipeline's training stages all go through
:func:`open_run`:

- no checkpoint in OUT: a fresh run. What a run killed before its first checkpoint left (its log,
  ``best.pt``, metrics, temp files) is removed first, so the log reads like one clean run;
- a checkpoint trained with the same *identity* as the command's: it is resumed, with or without
  ``--resume`` (rerunning the command that was killed continues it);
- a checkpoint trained with another identity: refused with one line naming every key that differs,
  e.g. ``RUN/last.pt was trained with train.lr=0.02, the command asks 0.05; use a new --out or
  --restart``. Nothing is loaded into a model and nothing in OUT is touched;
- ``--restart``: the folder's checkpoint, log and metrics are deleted first, then a fresh run.

The identity of a training is the part of the resolved config that decides its weights: the model,
the classes, the data it reads and the schedule (learning rate, iterations, batch size, seed, ...).
Keys that only decide logging, checkpoint frequency, worker processes or what happens after training
are left out (see :data:`SEG_IGNORED` and :data:`CAM_IGNORED`), so a rerun may change them. Paths are
compared as absolute paths. The identity is stored in the checkpoint (``"identity"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from urn.config import RENAMED
from urn.engine import distributed
from urn.engine.checkpoint import load_checkpoint
from urn.errors import UrnError
from urn.io import remove_path, remove_stale_temps_of

#: What a refusal tells the user to do.
HINT = "use a new --out or --restart"
#: Segmentation keys that do not change the weights (data section and schedule section).
SEG_IGNORED = {
    "data": {"num_workers", "skip_bad_samples", "test_split"},
    "schedule": {"log_every", "ckpt_every", "val_every"},
}
#: Classifier keys that do not change the weights: logging, checkpoints, workers and CAM inference.
CAM_IGNORED = {
    "log_every",
    "ckpt_every",
    "num_workers",
    "eval_val",
    "scales",
    "flip",
    "multi_crop",
    "batch_views",
    "heat_alpha",
}
#: Keys holding a file or folder: compared as absolute paths.
PATH_KEYS = {
    "data.root",
    "data.classes_file",
    "data.pseudo_masks",
    "data.uncertainty",
    "model.backbone.weights",
    "cam.backbone.weights",
    "cam.heat_dir",
}
#: Differing keys named in full in a refusal; more are counted.
MAX_LISTED = 5


# ------------------------------------------------------------------------------------------- identity
def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


def pick_keys(
    config: dict[str, Any],
    reads: Iterable[str],
    ignores: Iterable[str] = (),
    ignored_names: Iterable[str] = (),
) -> dict[str, Any]:
    """The keys of ``config`` (plain data) under the dotted prefixes ``reads``, flattened (``"a.b": v``).

    Keys under ``ignores``, and keys whose last part is in ``ignored_names``, are left out. Values are
    as stored (paths not normalised: callers compare paths their own way).
    """
    flat: dict[str, Any] = {}
    _flatten("", config, flat)
    flat = {RENAMED.get(k, k): v for k, v in flat.items()}  # a config stored before a key moved
    reads, ignores, names = tuple(reads), tuple(ignores), frozenset(ignored_names)

    def under(key: str, prefixes: tuple[str, ...]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    return {
        k: v for k, v in flat.items() if under(k, reads) and not under(k, ignores) and k.rsplit(".", 1)[-1] not in names
    }


def normalise_paths(flat: dict[str, Any], root: str | Path | None = None, cwd: str | None = None) -> dict[str, Any]:
    """Absolute paths and plain JSON values (lists, not tuples), so stored and fresh identities compare.

    Relative paths are taken from ``cwd`` (default: the current folder; a stored record passes the
    folder it was written from). With ``root``, a path inside it is written ``RUN/...`` (the folder
    reached by another spelling, or moved).
    """
    base = os.path.normpath(os.path.abspath(root)) if root is not None else None
    for key in PATH_KEYS & flat.keys():
        if flat[key] not in (None, ""):
            path = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(str(flat[key]))))
            inside = base is not None and (path == base or path.startswith(base + os.sep))
            flat[key] = "RUN" + path[len(base) :] if inside else path
    return json.loads(json.dumps(flat))


def segmentation_identity(
    config: dict[str, Any],
    schedule: str,
    classes: Sequence[str],
    *,
    target_dir: str | None = None,
    uncertainty_dir: str | None = None,
) -> dict[str, Any]:
    """The keys that decide a segmentation training's weights, flattened (``"train.lr": 0.01``).

    Args:
        config: the resolved config as plain data (:func:`urn.config.config_to_dict`).
        schedule: the config section of the schedule, ``"train"`` (Seg-1) or ``"seg2"``.
        classes: the class names the network predicts.
        target_dir, uncertainty_dir: the folders actually read, when they override ``config``.
    """
    data = {k: v for k, v in config["data"].items() if k not in SEG_IGNORED["data"]}
    if target_dir is not None:
        data["pseudo_masks"] = target_dir
    if uncertainty_dir is not None:
        data["uncertainty"] = uncertainty_dir
    if data.get("fully_supervised"):
        data["pseudo_masks"] = data["uncertainty"] = None  # not read
    sched = {k: v for k, v in config[schedule].items() if k not in SEG_IGNORED["schedule"]}
    flat: dict[str, Any] = {"phase": "seg2" if schedule == "seg2" else "seg1"}
    _flatten("model", config["model"], flat)
    _flatten("data", data, flat)
    _flatten(schedule, sched, flat)
    flat["classes"], flat["num_classes"] = list(classes), len(classes)
    return normalise_paths(flat)


def classifier_identity(config: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """The keys that decide a CAM classifier's weights, flattened (``"cam.lr": 0.01``).

    The training reads images and image-level labels of ``data.train_split`` only, so of the data
    section just the dataset and split count; ``cam.crop_scales``/``crop_stride`` count only with
    ``cam.heat_dir`` (heat-guided training), otherwise they only shape CAM inference.
    """
    cam = {k: v for k, v in config["cam"].items() if k not in CAM_IGNORED}
    if not cam.get("heat_dir"):
        cam.pop("crop_scales", None)
        cam.pop("crop_stride", None)
    flat: dict[str, Any] = {}
    _flatten("cam", cam, flat)
    for key in ("root", "layout", "train_split", "classes_file"):
        flat[f"data.{key}"] = config["data"].get(key)
    flat["classes"], flat["num_classes"] = list(classes), len(classes)
    return normalise_paths(flat)


# ----------------------------------------------------------------------------------------- comparing
def show_value(value: Any) -> str:
    """A value as it would be written on the command line, cut to a readable length."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | list):
        text = json.dumps(value)  # null, true, false, [...]
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys present in both identities whose values differ, in ``wanted``'s order.

    ``num_classes`` is dropped when ``classes`` differs too (it says the same, less well). A key only
    one side has (a config key added since the checkpoint was written) is not a difference.
    """
    keys = [k for k in wanted if k in stored and stored[k] != wanted[k]]
    if "classes" in keys and "num_classes" in keys:
        keys.remove("num_classes")
    return keys


def mismatch_message(
    path: Path,
    stored: dict[str, Any],
    wanted: dict[str, Any],
    keys: list[str],
    *,
    made: str = "trained",
    hint: str = HINT,
    show: Callable[[Any], str] = show_value,
) -> str:
    """``PATH was trained with k=old, the command asks new; use a new --out or --restart`` (one line).

    ``made`` and ``hint`` word it for other outputs (``urn run``'s stages); ``show`` writes a value.
    """
    shown = keys[:MAX_LISTED]
    old = ", ".join(f"{k}={show(stored[k])}" for k in shown)
    if len(keys) == 1:
        return f"{path} was {made} with {old}, the command asks {show(wanted[keys[0]])}; {hint}"
    more = f" and {len(keys) - len(shown)} more keys" if len(keys) > len(shown) else ""
    new = ", ".join(f"{k}={show(wanted[k])}" for k in shown)
    return f"{path} was {made} with {old}{more}; the command asks {new}; {hint}"


# ------------------------------------------------------------------------------------------ the door
def open_run(
    out: Path,
    checkpoint: str,
    wanted: dict[str, Any],
    kind: str,
    command: str,
    *,
    leftovers: Iterable[str] = (),
    restart: bool = False,
    resume: bool = False,
    is_main: bool = True,
) -> dict[str, Any] | None:
    """Apply the policy of this module to ``out``; returns the checkpoint to resume, or ``None``.

    Args:
        out: the training's output folder.
        checkpoint: the checkpoint's file name in ``out`` (``last.pt``).
        wanted: the identity of the command (:func:`segmentation_identity` / :func:`classifier_identity`).
        kind, command: the checkpoint's ``"kind"`` and the command that writes it (named in a refusal).
        leftovers: the other files and folders of a run in ``out`` (log, metrics, TensorBoard events, ...),
            removed before a fresh run.
        restart: ``--restart``: delete the checkpoint and the leftovers first.
        resume: ``--resume``; accepted for clarity, an identical run is resumed either way.
        is_main: only the main rank deletes; every rank must call this (it ends with a barrier).

    Raises:
        UrnError: ``--resume`` with ``--restart``; a checkpoint that cannot be read or was trained
            with another identity (one line naming the differing keys).
    """
    if resume and restart:
        raise UrnError("--resume and --restart contradict each other; pass one of them")
    out = Path(out)
    path = out / checkpoint
    names = [checkpoint, *leftovers]
    if not restart and (path.exists() or path.is_symlink()):
        if path.is_dir():
            raise UrnError(f"{path}: is a folder, not a checkpoint; {HINT}")
        try:
            state = load_checkpoint(path)
        except UrnError as exc:
            raise UrnError(f"{exc}; cannot resume it, {HINT}") from None
        if "iteration" not in state or "model" not in state:
            raise UrnError(f"{path}: not a checkpoint of this training (no iteration or model); {HINT}")
        stored = state.get("identity")
        if state.get("kind", kind) != kind:  # (a checkpoint of an earlier urn may have no kind)
            raise UrnError(f"{path}: not a `{command}` checkpoint; {HINT}")
        if not isinstance(stored, dict):  # written before checkpoints held their identity (pre-release urn)
            raise UrnError(f"{path}: a checkpoint of an earlier urn, without its identity: cannot resume it; {HINT}")
        keys = differences(stored, wanted)
        if keys:
            raise UrnError(mismatch_message(path, stored, wanted, keys))
        return state
    if is_main and out.is_dir():  # a fresh run: nothing of an earlier one may stay
        for name in names:  # files, and folders such as the TensorBoard events
            remove_path(out / name, "cannot delete it to start afresh")
        remove_stale_temps_of(out, names)
    distributed.barrier()
    return None


def restore(path: Path, what: str, load: Any) -> None:
    """Run ``load()`` (``load_state_dict`` calls); a mismatch becomes one line naming ``path``."""
    try:
        load()
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UrnError(f"{path}: the {what} in the checkpoint does not match ({reason[:160]}); {HINT}") from None
