"""Stopping a training cleanly: SIGINT/SIGTERM to the main process or to its whole process group.

``timeout``, Slurm preemption and ``kill -- -PGID`` signal every process of the group, DataLoader
workers included. A worker that died of the signal would make the main process fail with
``RuntimeError: DataLoader worker ... killed by signal`` before it could save. So the workers ignore
SIGINT/SIGTERM (:func:`worker_init`) and leave the stop to the main process (:class:`StopRequest`),
which saves a checkpoint and raises :class:`SignalStopError`; the CLI prints it as one line and exits
with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). A worker that dies anyway (SIGKILL, out of
memory) is turned into :class:`WorkerDiedError` by :func:`guard_workers` so the training can save what
it has and stop with one line too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from urn.errors import UrnError

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStopError(UrnError):
    """The training was stopped by a signal after saving its checkpoint; exit code ``128 + signal``."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class WorkerDiedError(UrnError):
    """A DataLoader worker process died (killed from outside); the training saves and stops."""


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag (``signal``) so the loop can save a checkpoint and stop cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            # signal() raises ValueError outside the main thread (e.g. some test runners): no handler then.
            with contextlib.suppress(ValueError):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def worker_init(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` making the worker ignore SIGINT/SIGTERM.

    Picklable (a module function), so it works with every start method.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _is_worker_death(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


@contextlib.contextmanager
def guard_workers(loader: Iterable[T]) -> Iterator[Iterator[T]]:
    """``with guard_workers(loader) as batches:`` iterate ``batches``; a dead worker becomes :class:`WorkerDiedError`.

    Torch reports the death from ``next`` or, through its SIGCHLD handler, from anywhere in the block;
    either way the workers are shut down (SIGCHLD held back meanwhile) so that no second report of the
    same death escapes while the training saves and stops.
    """
    it = iter(loader)
    try:
        yield _batches(it)
    except RuntimeError as exc:
        _hold_sigchld()
        if not _is_worker_death(exc):
            raise
        raise WorkerDiedError(str(exc).splitlines()[0].rstrip(". ")) from None
    finally:
        held = _hold_sigchld()
        try:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        finally:
            if held:
                # the workers are gone and any death reported: drop a SIGCHLD still pending (torch's
                # handler would report the same death again, from wherever the program then is)
                while signal.SIGCHLD in signal.sigpending():
                    signal.sigtimedwait({signal.SIGCHLD}, 0)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _batches(it: Iterator[T]) -> Iterator[T]:
    """``it``'s items; a connection lost to a worker that has died is :class:`WorkerDiedError`.

    (Torch raises the unpickling error as it is when it has not yet seen the worker die.)
    """
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except (ConnectionError, EOFError):
            dead = []
            for worker in getattr(it, "_workers", ()):
                worker.join(timeout=1.0)
                if worker.exitcode is not None:
                    dead.append(str(worker.pid))
            if not dead:
                raise
            raise WorkerDiedError(f"DataLoader worker (pid(s) {', '.join(dead)}) exited unexpectedly") from None
        yield item


def _hold_sigchld() -> bool:
    """Block SIGCHLD (POSIX); True when it is blocked now."""
    if not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    return True
