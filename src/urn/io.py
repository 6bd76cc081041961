"""Every file urn writes goes through here, atomically; every image or mask it reads is checked.

Atomic means: the bytes are written to a temporary file in the destination folder, flushed, and
renamed over the destination. A reader (or a resumed run) therefore sees either the old file, the
complete new one, or nothing, never half a file. Temporary files carry the suffix ``.urn-tmp`` so
that a resumed stage can sweep leftovers of a killed process with :func:`remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from urn.errors import DataError, UrnError

TMP_SUFFIX = ".urn-tmp"
IGNORE_INDEX = 255
#: What ``np.load`` raises on a truncated, corrupt or foreign ``.npz`` (a torn zip archive is not an OSError).
NPZ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


# --------------------------------------------------------------------------------------------- writes
@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit, fsync and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        blocker = next((a for a in (path.parent, *path.parent.parents) if a.exists() and not a.is_dir()), None)
        if blocker is not None:  # mkdir's "File exists" / "Not a directory" do not say which path is in the way
            raise UrnError(f"{path.parent}: cannot write here ({blocker} is a file, not a folder)") from None
        raise UrnError(f"{path.parent}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _silent_unlink(tmp)
        raise UrnError(f"{path}: write failed ({exc.strerror or exc})") from None
    except BaseException:
        _silent_unlink(tmp)
        raise


def _silent_unlink(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _open_append(path: Path) -> IO[str]:
    return open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the caller's with


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (training logs).

    An append is line-sized, so a crash loses at most the line being written. A failed write (a full
    disk, a quota, a folder gone) is one line naming the file, not a traceback.

    Raises:
        UrnError: the line could not be written.
    """
    path = Path(path)
    line = json.dumps(record, default=_json_default) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open_append(path) as fh:
            fh.write(line)
            fh.flush()
    except OSError as exc:
        raise UrnError(f"{path}: cannot append to the log ({exc.strerror or exc})") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (never pickled)."""
    with atomic_open(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def atomic_save_png(path: str | Path, image: Image.Image) -> None:
    """Save a PIL image as PNG atomically."""
    with atomic_open(path) as fh:
        image.save(fh, format="PNG")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch

    with atomic_open(path) as fh:
        torch.save(obj, fh)


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files a killed process left in ``folder`` (recursively). Returns how many."""
    stale = list(Path(folder).rglob(f"*{TMP_SUFFIX}"))
    for tmp in stale:
        _silent_unlink(tmp)
    return len(stale)


def remove_path(path: Path, failure: str) -> None:
    """Delete a file, link or folder tree (nothing there: nothing to do); an error is one line,
    ``PATH: <failure> (reason)``."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UrnError(f"{path}: {failure} ({exc.strerror or exc})") from None


def remove_stale_temps_of(folder: str | Path, names: Iterable[str]) -> int:
    """Delete the temporary files a killed process left for the files ``folder/<name>`` only.

    For a rank sharing ``folder`` with others, which may be writing temps of their own files.
    Returns how many were deleted.
    """
    prefixes = tuple(f".{name}." for name in names)  # how atomic_open names the temp of <name>
    stale = [tmp for tmp in Path(folder).glob(f".*{TMP_SUFFIX}") if tmp.name.startswith(prefixes)]
    for tmp in stale:
        _silent_unlink(tmp)
    return len(stale)


# ------------------------------------------------------------------------------------------- palette
def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), extended to ``n`` entries.

    Returns:
        ``(n, 3)`` uint8; entry 0 is black, 255 (ignore) is (224, 224, 192) as in the devkit.
    """
    j = np.arange(8)[:, None]  # bit 3j + channel of the index is bit 7 - j of the channel
    bits = (np.arange(n)[:, None, None] >> (3 * j + np.arange(3))) & 1  # (n, 8, 3)
    return (bits << (7 - j)).sum(axis=1).astype(np.uint8)


def save_palette_png(path: str | Path, mask: np.ndarray) -> None:
    """Write an ``(H, W)`` array of class indices (0..255) as a VOC-palette PNG, atomically."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-d, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask values must lie in 0..255")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().flatten().tolist())
    atomic_save_png(path, img)


def colorize(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 RGB through the VOC palette."""
    return voc_palette()[mask.astype(np.uint8)]


# -------------------------------------------------------------------------------------------- reads
def read_image(path: str | Path) -> np.ndarray:
    """Read an image fully and return ``(H, W, 3)`` uint8 RGB.

    Raises:
        DataError: the file is missing, not a file, empty, truncated or not an image.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode everything now, so truncation is found here and not later
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable image ({_short(exc)})") from None
    return arr


def read_mask(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a label PNG (palette or 8-bit grey; both give the stored indices) as ``(H, W)`` uint8.

    Args:
        path: the mask file.
        num_classes: when given, every value must be ``< num_classes`` or equal to 255 (ignore).

    Raises:
        DataError: unreadable file, more than one channel, or labels out of range.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                arr = np.asarray(im)  # palette images give indices, not colours
            elif im.mode in ("I", "I;16", "I;16B"):
                arr = np.asarray(im).astype(np.int64)
            else:
                raise DataError(path, f"mask must be a single-channel (palette or grey) PNG, got mode {im.mode}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable mask ({_short(exc)})") from None
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(path, f"label values {int(arr.min())}..{int(arr.max())} outside 0..255")
        arr = arr.astype(np.uint8)
    if num_classes is not None:
        check_labels(arr, num_classes, path)
    return arr


def mask_complete(path: Path, size: tuple[int, int] | None = None) -> bool:
    """True when ``path`` is a readable mask (of ``(H, W)`` ``size`` when given): a resumed run redoes the rest."""
    if not path.is_file():
        return False
    try:
        mask = read_mask(path)
    except DataError:
        return False
    return size is None or mask.shape == tuple(size)


def check_labels(mask: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise :class:`DataError` if ``mask`` holds a value ``>= num_classes`` other than 255."""
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = sorted({int(v) for v in np.unique(mask[bad])})[:5]
        raise DataError(path, f"label values {values} outside the {num_classes} classes (and 255 = ignore)")


def load_npy(path: str | Path) -> np.ndarray:
    """Load a plain ``.npy`` array (no pickles). Raises :class:`DataError` when it cannot."""
    path = Path(path)
    _check_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"unreadable .npy ({_short(exc)})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


# ------------------------------------------------------------------------------------- output folders
LOCK_NAME = ".urn.lock"


def check_output_dir(out: str | Path, option: str = "--out") -> Path:
    """Make sure ``out`` is a folder this process can write into (made if missing); returns it.

    Every command that writes an output folder calls this (through :func:`claim_output`) before any
    work, so a bad ``--out`` is one line at the start and not a traceback, or a lost evaluation, at the end.

    Raises:
        UrnError: ``out`` is a file, lies under a file, cannot be made, or is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UrnError(f"{out}: {option} is a file, not a folder")
    blocker = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise UrnError(f"{out}: {option} cannot be made ({blocker} is a file, not a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UrnError(f"{out}: {option} cannot be made ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UrnError(f"{out}: {option} is not writable")
    return out


def _launcher_rank() -> int:
    """This process's rank by the launcher variables (0 without a launcher); never raises."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


@contextlib.contextmanager
def claim_output(out: str | Path, option: str = "--out", command: str | None = None) -> Iterator[Path]:
    """Check ``out`` (:func:`check_output_dir`) and hold an exclusive lock on it while the block runs.

    The lock is ``fcntl.flock`` on ``OUT/.urn.lock``, taken by rank 0 only (the other ranks of the same job
    share the folder) and released by the operating system whenever the process ends, however it ends.
    The lock file holds the holder's pid and ``command`` (default: this program's command line), which a
    second run names when it stops. On the way out the lock file is removed, and so is ``out`` when this
    call made it and nothing else was written there (a command that failed at once leaves nothing).

    Raises:
        UrnError: a bad ``out``, or another process holding its lock.
    """
    out = Path(out)
    existed = out.is_dir()
    out = check_output_dir(out, option)
    if _launcher_rank() != 0:
        yield out
        return
    path = out / LOCK_NAME
    fd = _lock(path, out, option)
    try:
        command = command or " ".join(["urn", *sys.argv[1:]])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(), 0)
        yield out
    finally:
        _silent_unlink(path)  # still locked: a process waiting on it sees another inode and retries
        os.close(fd)  # closing the only descriptor releases the lock
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty


def _lock(path: Path, out: Path, option: str) -> int:
    """Open and ``flock`` ``path`` exclusively (never blocking); returns the descriptor."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UrnError(f"{path}: cannot create the lock of {out} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip().splitlines()
            os.close(fd)
            who = lines[0] if lines else "a process that has not written its name yet"
            raise UrnError(
                f"{out}: in use by another urn run ({who}); wait for it to finish or choose another {option}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise UrnError(f"{path}: cannot lock {out} ({exc.strerror or exc})") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we locked it: lock the file now at ``path``
