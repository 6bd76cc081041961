"""Training checkpoints: one dict, written atomically, loaded with ``weights_only=True``.

Keys: ``model``, ``optimizer``, ``scaler``, ``iteration`` (iterations completed), ``rng`` (every
rank's RNG state: torch CPU and CUDA, NumPy, Python), ``config`` (the resolved config as plain data),
``kind`` (what trained it), ``identity`` (the config keys a resume must match, :mod:`urn.engine.resume`).
Nothing in a checkpoint is executed on load: ``torch.load(weights_only=True)`` refuses pickled code.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from urn.errors import UrnError
from urn.io import atomic_torch_save

if TYPE_CHECKING:
    from urn.config import ModelConfig
    from urn.models import Segmentor


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file + rename)."""
    atomic_torch_save(path, state)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or plain state dict safely onto the CPU.

    Raises:
        UrnError: the file is missing, truncated, or holds anything but tensors and plain data
            (for example a malicious pickle), with a one-line message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UrnError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UrnError(f"{path}: refused to load: not a plain weights file ({torch_load_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the unpickler on a foreign or torn file
        # (RuntimeError, EOFError, ValueError; IndexError or KeyError from bytes that parse as opcodes)
        raise UrnError(f"{path}: unreadable checkpoint ({torch_load_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise UrnError(f"{path}: not a checkpoint (expected a dict, got {type(obj).__name__})")
    return obj


def torch_load_reason(exc: BaseException) -> str:
    """The telling phrase of a ``torch.load`` error, for a one-line message.

    torch's texts run to paragraphs of advice (including "set weights_only=False", which is what
    must not be done with an untrusted file); keep the sentence that says what is wrong: the
    blocked global of a pickle (``... unsupported GLOBAL posix.system ...``) or the first sentence.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = next((ln for ln in lines if re.search(r"unsupported global", ln, re.IGNORECASE)), lines[0])
    return line.split(". ")[0].rstrip(".")[:160]


def model_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint (or the dict itself if it is a bare state dict)."""
    state = obj.get("model", obj)
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_model_weights(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's model weights into ``model`` strictly; returns the checkpoint dict.

    Raises:
        UrnError: keys or shapes do not match, naming the first mismatched keys.
    """
    ckpt = load_checkpoint(path)
    state = model_state(ckpt)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if shape:
            k = shape[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model wants {tuple(own[k].shape)}")
        raise UrnError(f"{path}: checkpoint does not match the model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
    return ckpt


def load_segmentor(
    cfg: ModelConfig, num_classes: int, checkpoint: str | Path, device: torch.device | str = "cpu"
) -> Segmentor:
    """The segmentor of ``checkpoint`` (built from ``cfg``), in eval mode on ``device``.

    Built without its backbone's ImageNet weights: the strict load replaces every weight, so reading
    them (a file, or a download with ``pretrained``) would only cost time.

    Raises:
        UrnError: the checkpoint is unreadable or does not match the model (:func:`load_model_weights`).
    """
    from urn.models import build_segmentor

    bare = dataclasses.replace(cfg.backbone, weights=None, pretrained=False, allow_random_init=True)
    model = build_segmentor(dataclasses.replace(cfg, backbone=bare), num_classes)
    load_model_weights(model, checkpoint)
    return model.to(device).eval()
