"""Per-iteration metrics: `metrics.csv` (one row per iteration) and TensorBoard events.

Rows are keyed by `iteration`. On resume, rows beyond the checkpoint's iteration (written
by a run that died before its next checkpoint) are dropped, so every iteration appears
exactly once. Writes go to a temporary file that is renamed into place: a crash or a full
disk never leaves a half-written `metrics.csv`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping

__all__ = ["MetricsError", "MetricsWriter", "check_metrics", "read_metrics"]


class MetricsError(ValueError):
    """metrics.csv does not agree with the checkpoint it should continue; one line."""


def read_metrics(path: str) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats (empty cells become NaN).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in rows]


def check_metrics(path: str, iteration: int, n_timesteps: int) -> str | None:
    """Checks `path` against a checkpoint at `iteration` with `n_timesteps` real steps.

    A resumable metrics.csv has a header naming `iteration` and `n_timesteps`, rows of
    exactly the header's width whose cells all parse as numbers (another column may be
    empty in the rows before its first number: one the code added when the run was
    resumed), iterations 1, 2, ... in order up to at least `iteration` (later rows come
    from a run killed before its next checkpoint and are dropped on resume), and the
    row of `iteration` holds `n_timesteps`. Returns None if so, a note if the file is
    absent (rows 1..iteration are then missing; nothing is lost that is still there), and
    raises MetricsError (one line, saying what is wrong) otherwise.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    if not os.path.exists(path):
        if iteration == 0:
            return None
        return f"{path} is missing: rows of iterations 1..{iteration} will be absent"
    with open(path, newline="") as f:
        raw = list(csv.reader(f))
    if not raw:
        if iteration == 0:
            return None
        raise MetricsError(f"{path} is empty but the checkpoint is at iteration {iteration}")
    header, body = raw[0], raw[1:]
    for name in ("iteration", "n_timesteps"):
        if name not in header:
            raise MetricsError(f"{path}: the header has no {name!r} column (damaged)")
    # column j has had a number in an earlier row (the two keys must have one in every row)
    filled = [name in ("iteration", "n_timesteps") for name in header]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise MetricsError(
                f"{path} line {i} has {len(row)} cells, the header {len(header)} (cut short?)"
            )
        for j, cell in enumerate(row):
            # A column added by a later version of the code (a run resumed across it) is
            # empty in the rows written before: empty cells only before its first number.
            if cell == "" and not filled[j]:
                continue
            try:
                float(cell)
            except ValueError:
                raise MetricsError(f"{path} line {i}: {cell!r} is not a number") from None
            filled[j] = True
    its = [float(r[header.index("iteration")]) for r in body]
    kept = [it for it in its if it <= iteration]
    if kept != [float(k) for k in range(1, iteration + 1)]:
        raise MetricsError(
            f"{path} holds iterations {_ranges(its)} but the checkpoint is at iteration "
            f"{iteration}: rows are missing or out of order"
        )
    if iteration:
        row = body[its.index(float(iteration))]
        steps = float(row[header.index("n_timesteps")])
        if steps != n_timesteps:
            raise MetricsError(
                f"{path}: iteration {iteration} has n_timesteps {steps:g}, the checkpoint "
                f"{n_timesteps}: written by another run"
            )
    return None


def _ranges(values: list[float]) -> str:
    if not values:
        return "none"
    if len(values) > 6:
        return f"{values[0]:g}..{values[-1]:g} ({len(values)} rows)"
    return ", ".join(f"{v:g}" for v in values)


class MetricsWriter:
    """Appends one row per iteration to `run_dir/metrics.csv` and to TensorBoard."""

    def __init__(self, run_dir: str, tensorboard: bool = True, purge_step: int | None = None):
        """`purge_step`: TensorBoard hides the events at steps >= it written before (a
        resumed run rewrites the steps after its checkpoint)."""
        self.path = os.path.join(run_dir, "metrics.csv")
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = []
        if os.path.exists(self.path):
            self.rows = read_metrics(self.path)
            if self.rows:
                self.columns = list(self.rows[0])
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=purge_step)

    def truncate(self, last_iteration: int) -> None:
        """Drops rows with `iteration > last_iteration` (resume after a crash)."""
        kept = [r for r in self.rows if r["iteration"] <= last_iteration]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._flush()

    def write(self, row: Mapping[str, float]) -> None:
        row = {k: float(v) for k, v in row.items()}
        if "iteration" not in row:
            raise ValueError("a metrics row needs an 'iteration'")
        if not self.columns:
            self.columns = list(row)
        for k in row:
            if k not in self.columns:
                self.columns.append(k)
        self.rows = [r for r in self.rows if r["iteration"] != row["iteration"]] + [row]
        self._flush()
        if self._tb is not None:
            step = int(row.get("n_timesteps", row["iteration"]))
            for k, v in row.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def _flush(self) -> None:
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns, restval="")
                w.writeheader()
                for r in self.rows:
                    w.writerow({k: repr(v) if math.isfinite(v) else str(v) for k, v in r.items()})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise OSError(f"could not write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
