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

__all__ = ["MetricsWriter", "read_metrics"]


def read_metrics(path: str) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats (empty cells become NaN).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in rows]


class MetricsWriter:
    """Appends one row per iteration to `run_dir/metrics.csv` and to TensorBoard."""

    def __init__(self, run_dir: str, tensorboard: bool = True):
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

            self._tb = SummaryWriter(os.path.join(run_dir, "tb"))

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
