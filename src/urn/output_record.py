"""What made a per-image output folder, so a rerun never mixes outputs of different inputs or configs.

The per-image commands (``urn predict``, ``urn uncertainty``, ``urn cam infer``, ``urn pmm``) skip
every output file that is already complete, which is what makes them resumable. That is only right
when the files were made by the same command with the same inputs: predicting into the same ``--out``
with another checkpoint must not keep the old PNGs. Each such command therefore writes
``OUT/urn-record.json`` before its first output: the command, the config keys it reads (resolved), its
options, and the identity of its inputs (a checkpoint's SHA-256; an input folder's own record, or its
file count, size and newest modification time). On a rerun into the same folder:

- same record: the run resumes (complete files are kept, the rest is made);
- another record: the command stops before any work with one line naming what changed; with
  ``--recompute`` it deletes the folder's contents first and starts over;
- no record but files in the folder (made by hand, by another tool or an older urn): it stops, since
  nothing says those files match the command.

``urn run`` keeps its own per-stage records (``DONE.json``, :mod:`urn.stages.pipeline`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from urn.engine.resume import differences, normalise_paths, pick_keys, show_value
from urn.errors import UrnError
from urn.io import LOCK_NAME, _launcher_rank, atomic_write_json, claim_output, remove_path

RECORD_NAME = "urn-record.json"
#: Keys under a command's config sections that never change its outputs (speed, logging, workers).
IGNORED_NAMES = frozenset({"num_workers", "batch_views", "log_every", "ckpt_every", "val_every", "eval_val"})
#: The dataset keys every per-image command reads (which images, which classes).
DATASET_KEYS = ("data.root", "data.layout", "data.classes_file")
_CHUNK = 1 << 20


def file_identity(path: str | Path) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a file (a checkpoint): the content, not the name, identifies it."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def folder_identity(path: str | Path) -> dict[str, Any]:
    """The identity of an input folder (CAMs, probabilities).

    A folder made by one of these commands is identified by its own record (what made it); any other
    by its file count, total size and newest modification time, which change whenever a file is
    added, removed or rewritten.
    """
    path = Path(path)
    record = read_record(path)
    if record is not None:
        return {"path": str(path.resolve()), "record": record}
    count = size = newest = 0
    for root, _, names in os.walk(path):  # symlinked folders are not entered
        for name in names:
            file = os.path.join(root, name)
            if name not in (LOCK_NAME, RECORD_NAME) and os.path.isfile(file):
                st = os.stat(file)
                count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return {"path": str(path.resolve()), "files": count, "bytes": size, "newest_mtime_ns": newest}


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The record of ``folder``, or ``None`` (none, unreadable, or not a record)."""
    try:
        record = json.loads((Path(folder) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "command" in record else None


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without the paths of identified inputs: a copied checkpoint is the same input."""
    inputs = {
        name: ({k: v for k, v in value.items() if k != "path"} if isinstance(value, dict) else value)
        for name, value in (record.get("inputs") or {}).items()
    }
    return {**record, "inputs": inputs}


def _flat_record(record: dict[str, Any]) -> dict[str, Any]:
    return {"command": record.get("command"), **(record.get("config") or {}), **(record.get("inputs") or {})}


def _describe_change(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    old, new = _flat_record(_comparable(stored)), _flat_record(_comparable(wanted))
    keys = differences(old, new) + [k for k in new if k not in old] + [k for k in old if k not in new]
    old, new = _flat_record(stored), _flat_record(wanted)  # with paths, to name them
    if not keys:
        return "an older format of record"
    key = keys[0]
    if isinstance(new.get(key), dict) or isinstance(old.get(key), dict):
        what = f"another {key} ({_short_identity(new.get(key))}; it was {_short_identity(old.get(key))})"
    else:
        what = f"{key}={show_value(new.get(key))} (it was {show_value(old.get(key))})"
    more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
    return what + more


def _short_identity(value: Any) -> str:
    if not isinstance(value, dict):
        return show_value(value)
    if "sha256" in value:
        return f"{value.get('path')}, sha256 {str(value['sha256'])[:12]}"
    if "record" in value:
        return f"{value.get('path')}, made by urn {value['record'].get('command')}"
    return f"{value.get('path')}, {value.get('files')} files"


def open_output(out: str | Path, record: dict[str, Any], *, recompute: bool, option: str = "--out") -> None:
    """Apply the rerun policy of this module to ``out`` and write ``record`` there (rank 0 only calls it).

    Raises:
        UrnError: ``out`` holds files of another record (without ``recompute``), or files without one.
    """
    out = Path(out)
    stored = read_record(out)
    entries = [e for e in out.iterdir() if e.name not in (LOCK_NAME, RECORD_NAME)] if out.is_dir() else []
    if stored is not None and _comparable(stored) == _comparable(record):
        if stored != record:
            atomic_write_json(out / RECORD_NAME, record)  # the same inputs, reached by another path
        return  # the same command and inputs: resume
    if stored is None and entries:
        raise UrnError(
            f"{out}: holds files that no {RECORD_NAME} describes (made by hand, by another tool or an older urn), "
            f"so they may not match this command; choose an empty {option} or delete the folder"
        )
    if stored is not None and entries and not recompute:
        raise UrnError(
            f"{out}: made by urn {stored.get('command')} with other inputs: this command asks "
            f"{_describe_change(stored, record)}; pass --recompute to delete its outputs and recompute, "
            f"or choose another {option}"
        )
    for entry in entries:
        remove_path(entry, "cannot delete this old output")
    atomic_write_json(out / RECORD_NAME, record)


#: The config sections / dotted keys each per-image command reads (besides its inputs and options).
COMMAND_READS: dict[str, tuple[str, ...]] = {
    "predict": (*DATASET_KEYS, "model", "infer", "crf"),
    "uncertainty": (*DATASET_KEYS, "model", "infer", "crf", "uncertainty"),
    "cam infer": (*DATASET_KEYS, "cam"),
    "pmm": (*DATASET_KEYS, "pmm"),
}


def command_record(command: str, cfg: Any, **inputs: Any) -> dict[str, Any]:
    """The record of ``command`` run with ``cfg`` (a :class:`~urn.config.Config`) on ``inputs``, as plain
    JSON: ``{"command", "config": the keys it reads (flat, paths absolute), "inputs": {name: value}}``.

    ``inputs`` are options and input identities (:func:`file_identity`, :func:`folder_identity`).
    """
    from urn.config import config_to_dict

    config = normalise_paths(pick_keys(config_to_dict(cfg), COMMAND_READS[command], (), IGNORED_NAMES))
    return json.loads(json.dumps({"command": command, "config": config, "inputs": inputs}))


def input_file(path: str | Path | None) -> dict[str, Any] | None:
    """:func:`file_identity` of ``path``; a missing file is named only (the command reports it itself)."""
    return _input_identity(path, Path.is_file, file_identity)


def input_folder(path: str | Path | None) -> dict[str, Any] | None:
    """:func:`folder_identity` of ``path``; a missing folder is named only (the command reports it itself)."""
    return _input_identity(path, Path.is_dir, folder_identity)


def _input_identity(
    path: str | Path | None, exists: Callable[[Path], bool], identity: Callable[[Path], dict[str, Any]]
) -> dict[str, Any] | None:
    if path is None:
        return None
    path = Path(path)
    return identity(path) if exists(path) else {"path": str(path.resolve()), "missing": True}


#: How long a rank other than 0 waits for rank 0 to open the folder (it deletes files on --recompute).
WAIT_SECONDS = 600.0


@contextlib.contextmanager
def recorded_output(
    out: str | Path,
    record: dict[str, Any],
    *,
    recompute: bool,
    option: str = "--out",
    command_line: str | None = None,
) -> Iterator[Path]:
    """Claim ``out`` (:func:`urn.io.claim_output`: checked and locked), then apply :func:`open_output`.

    Rank 0 opens the folder; other ranks of the same job wait until its record is the one they want,
    so none writes into a folder that rank 0 is still emptying. A command that fails before writing
    anything takes its record away again (and so leaves no folder it made).
    """
    with claim_output(out, option, command=command_line) as path:
        main = _launcher_rank() == 0
        if main:
            open_output(path, record, recompute=recompute, option=option)
        else:
            deadline = time.monotonic() + WAIT_SECONDS
            while (stored := read_record(path)) is None or _comparable(stored) != _comparable(record):
                if time.monotonic() > deadline:
                    raise UrnError(f"{path}: rank 0 did not open this {option} within {WAIT_SECONDS:.0f} s")
                time.sleep(0.2)
        try:
            yield path
        except BaseException:
            if main and not any(e.name not in (LOCK_NAME, RECORD_NAME) for e in path.iterdir()):
                (path / RECORD_NAME).unlink(missing_ok=True)
            raise
