"""Checkpoints: orbax pytrees of the whole run state, written atomically, last N kept.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoints intact and `latest_step` never returns a
partial one. The run's config is stored beside the checkpoints as `config.json` by the
caller; never pickle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["CheckpointError", "Checkpointer"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or does not fit this run; one-line message."""


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (orbax's span many), cut short."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


class _HoldErrors(logging.Filter):
    """Holds back the ERROR records logged through absl (orbax's logger) while attached."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True


class _DropAbandonedReads(logging.Filter):
    """Drops asyncio's "exception was never retrieved" reports.

    When orbax's restore of a corrupt checkpoint fails on one array, its reads of the other
    arrays fail too, but nobody awaits them any more: asyncio then prints each one's
    traceback whenever the task is collected (seen once, under `pytest -n 2`: timing-
    dependent). The `sys.unraisablehook` echoes of the same failure ("Event loop is closed")
    are dropped by the CLIs, `experiments/_quiet.py`. The restore's own error is reported as a
    CheckpointError; these are its echoes. Attached to the "asyncio" logger after the
    first failed restore (the package runs no asyncio of its own).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


_ABANDONED_READS = _DropAbandonedReads()


def _silence_abandoned_reads() -> None:
    """Attaches `_DropAbandonedReads` to the "asyncio" logger (once per process)."""
    asyncio_logger = logging.getLogger("asyncio")
    if _ABANDONED_READS not in asyncio_logger.filters:
        asyncio_logger.addFilter(_ABANDONED_READS)


class Checkpointer:
    """Saves and restores the run state pytree under `run_dir/checkpoints/<step>`."""

    def __init__(self, run_dir: str, keep: int = 3):
        import orbax.checkpoint as ocp

        # Orbax logs every save at INFO through absl; the run prints its own progress.
        logging.getLogger("absl").setLevel(logging.WARNING)
        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
        self._unreadable = self.directory + ".unreadable"
        # Synchronous saves: the run waits for every checkpoint anyway, and orbax's async
        # commit thread can stall for its 300 s timeout when a signal (Ctrl-C) lands
        # mid-save; without it a signal only ever sets the run's stop flag.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise CheckpointError(f"cannot create {self.directory}: {e}") from None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Writes `state` as checkpoint `step` and waits until it is complete on disk.

        A failed write (e.g. a full disk) raises CheckpointError with one line; what orbax's
        writer threads log on the way (a traceback per failed array) is dropped then, and
        passed on if the save succeeds after all.
        """
        state = jax.tree.map(np.asarray, state)
        held = _HoldErrors()
        absl_logger = logging.getLogger("absl")
        absl_logger.addFilter(held)
        try:
            self._manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
            self._manager.wait_until_finished()
        except Exception as e:  # orbax wraps OSErrors in several ways
            raise CheckpointError(
                f"could not write checkpoint {step} in {self.directory}: {_first_line(e)}"
            ) from None
        finally:
            absl_logger.removeFilter(held)
        for record in held.records:
            absl_logger.handle(record)

    def restore(
        self, step: int, like: Any, older: Sequence[tuple[Any, Callable[[Any], Any]]] = ()
    ) -> Any:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `like`.

        `older`: `(like_old, upgrade)` pairs, the layouts earlier versions wrote; when the
        checkpoint is not in `like`'s layout, each is tried in turn and the first that
        reads is returned as `upgrade(restored)` (a state of `like`'s layout).

        Raises CheckpointError naming the first mismatching leaf if the checkpoint was
        written by another configuration.
        """
        try:
            return self._restore_as(step, like)
        except CheckpointError as error:
            for like_old, upgrade in older:
                try:
                    restored = self._restore_as(step, like_old)
                except CheckpointError:
                    continue
                return upgrade(restored)
            raise error from None

    def _restore_as(self, step: int, like: Any) -> Any:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), like
        )
        try:
            restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except Exception as e:
            _silence_abandoned_reads()
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} could not be restored (corrupt, or "
                f"written by another configuration): "
                f"{_first_line(e)}"
            ) from None
        got = jax.tree_util.tree_leaves_with_path(restored)
        want = jax.tree_util.tree_leaves_with_path(like)
        for (path, a), (_, b) in zip(got, want, strict=True):
            if np.shape(a) != np.shape(b):
                raise CheckpointError(
                    f"checkpoint {step}: {jax.tree_util.keystr(path)} has shape {np.shape(a)}, "
                    f"this run expects {np.shape(b)}"
                )
        return restored

    def restore_newest(
        self,
        like: Any,
        reject: Callable[[int, Any], str | None] | None = None,
        older: Sequence[tuple[Any, Callable[[Any], Any]]] = (),
    ) -> tuple[int, Any, list[str]]:
        """Restores the newest checkpoint that can be read, falling back to older ones.

        `like` and `older` as in `restore`.

        Returns `(step, state, skipped)`, `skipped` one line per newer checkpoint that could
        not be restored (corrupt, or of another configuration) or that `reject(step,
        state)` refused (it returns the reason, or None to accept; e.g. a checkpoint copied
        in from elsewhere, whose content disagrees with its step); those are moved, not
        deleted, to `checkpoints.unreadable/<step>` beside `checkpoints/`, so that the run
        can write its steps again. Raises CheckpointError if there is none or none can be
        used (then nothing is moved).
        """
        skipped: list[str] = []
        bad: list[int] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state = self.restore(step, like, older)
            except CheckpointError as e:
                skipped.append(f"{str(e)[:300]}; moved to {self._unreadable}")
                bad.append(step)
                continue
            reason = reject(step, state) if reject is not None else None
            if reason is not None:
                skipped.append(f"checkpoint {step}: {reason}; moved to {self._unreadable}")
                bad.append(step)
                continue
            for b in bad:
                os.makedirs(self._unreadable, exist_ok=True)
                target = os.path.join(self._unreadable, str(b))
                suffix = 0
                while os.path.exists(target):
                    suffix += 1
                    target = os.path.join(self._unreadable, f"{b}.{suffix}")
                os.rename(os.path.join(self.directory, str(b)), target)
            if bad:
                self._manager.reload()
            return step, state, skipped
        if not skipped:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        raise CheckpointError(f"no checkpoint in {self.directory} can be restored: {skipped[0]}")

    def close(self) -> None:
        self._manager.close()
