"""Any metrics.csv column of committed runs at given real-step counts, per run and averaged.

  python docs/probes/column_at_steps.py RUN_DIR [RUN_DIR ...] --column=Meta/Entropy \
      [--at=20000,40000,100000]

Reads each run's metrics.csv (nothing is trained) and prints the column's value at the
last row whose `n_timesteps` is at or below each step count (the iteration that had
collected that much real data; the runs' rows fall on the same counts when their
configurations match), then the mean over the runs; "-" where a run stopped before the
step count. For the columns the results table quotes beside the return: the policy's
entropy, the adaptation KL, the models' error. (How many runs of every configuration reached
a return: `config_means.py --levels`.)
"""

import argparse
import csv
import os
import sys

import numpy as np


def value_at(rows: list[dict], column: str, step: int) -> float:
    """The column at the last row at or below `step`; nan if the run never got that far."""
    before = [r for r in rows if float(r["n_timesteps"]) <= step]
    if not before or float(rows[-1]["n_timesteps"]) < step:
        return float("nan")
    return float(before[-1][column])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--column", required=True)
    parser.add_argument("--at", default="20000,40000,100000")
    args = parser.parse_args()
    try:
        steps = [int(s) for s in args.at.split(",")]
    except ValueError:
        parser.error(f"--at: expected comma-separated integers, got {args.at!r}")
    table = []
    for run in args.runs:
        path = os.path.join(run, "metrics.csv")
        if not os.path.isfile(path):
            sys.exit(f"error: {path}: no such file")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or args.column not in rows[0]:
            sys.exit(f"error: {path}: no column {args.column!r}")
        table.append([value_at(rows, args.column, s) for s in steps])
        cells = " | ".join("-" if np.isnan(v) else f"{v:.4g}" for v in table[-1])
        print(f"{os.path.basename(run.rstrip('/'))} | {cells}")
    values = np.asarray(table)
    reached = ~np.isnan(values)
    mean = [
        values[reached[:, i], i].mean() if reached[:, i].any() else np.nan
        for i in range(len(steps))
    ]
    print(
        f"{args.column} at {', '.join(f'{s:,}' for s in steps)}; mean | "
        + " | ".join(f"{v:.4g}" for v in mean)
    )


if __name__ == "__main__":
    main()
