"""Every committed configuration of a task, ranked by its mean return over given seeds.

  python docs/probes/config_means.py --task=hopper [--at=100000] [--seeds=0,1,2] \
      [--column=PrePolicy/AverageReturn] [--results=docs/results]

Groups the run directories `<results>/<task>-<name>-s<seed>` by `<task>-<name>` (one
configuration per name, as committed; `ppo-*` and stopped copies such as `-s2-stopped-66k`
do not match), takes each run's column at the last row at or below `--at` (runs that stopped
before it are left out), and prints the configurations that have every one of `--seeds`,
lowest mean first, with the per-seed values, then how many runs of any configuration reached
each of the returns in `--levels`. The answer to "has any configuration met the goal on
seeds 0-2, and how rare is a seed at the goal". Reads metrics.csv only; nothing is trained.
"""

import argparse
import collections
import csv
import glob
import os
import re
import sys

import numpy as np
from column_at_steps import value_at  # this folder's probe; the script's folder is on sys.path

_RUN = re.compile(r"^(?P<config>.+)-s(?P<seed>\d+)$")


def run_value(path: str, column: str, step: int) -> float | None:
    """`column_at_steps.value_at` on one metrics.csv; None for nan or a missing column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        return None
    value = value_at(rows, column, step)
    return None if np.isnan(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", required=True, help="run-name prefix: hc, hopper, ant, walker2d, swimmer"
    )
    parser.add_argument("--at", type=int, default=100_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--column", default="PrePolicy/AverageReturn")
    parser.add_argument(
        "--levels", default="", help="comma-separated values to count runs at or above"
    )
    parser.add_argument("--results", default="docs/results")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        levels = [float(v) for v in args.levels.split(",") if v]
    except ValueError:
        parser.error("--seeds: integers, --levels: numbers, comma-separated")
    runs: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for run in sorted(glob.glob(os.path.join(args.results, f"{args.task}-*"))):
        match = _RUN.match(os.path.basename(run))
        path = os.path.join(run, "metrics.csv")
        if not match or not os.path.isfile(path):
            continue
        value = run_value(path, args.column, args.at)
        if value is not None:
            runs[match["config"]][int(match["seed"])] = value
    if not runs:
        sys.exit(
            f"error: no run of {args.task!r} under {args.results} reached {args.at:,} real steps"
        )
    complete = [
        (float(np.mean([v[s] for s in seeds])), c, [v[s] for s in seeds])
        for c, v in runs.items()
        if all(s in v for s in seeds)
    ]
    for mean, config, values in sorted(complete):
        cells = ", ".join(f"{v:.0f}" for v in values)
        print(f"{mean:8.1f}  {config}  ({cells})")
    print(
        f"{len(complete)} configurations with seeds {args.seeds} at {args.at:,} real steps "
        f"({args.column})"
    )
    every = np.asarray([v for seeds_of in runs.values() for v in seeds_of.values()])
    for level in levels:
        print(
            f"runs at or above {level:g}: {int((every >= level).sum())} of {every.size} "
            "(every seed of every configuration)"
        )


if __name__ == "__main__":
    main()
