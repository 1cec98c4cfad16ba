"""Does a seed whose first meta phase exploits its models end lower? (issue 15)

  python docs/probes/early_blowup.py --task=hc [--preset=cpu] [--threshold=200] [--at=100000] \
      [--results=docs/results]

The first meta phase runs on models fitted to the warm-up alone. On many HalfCheetah runs it
imagines a pre-update return far above the real one (the preset's seeds 1-3: 938-1,425
against -23 to -72 real). This
reads every committed run of a task (the `config_means.py` naming, one preset) that reached
`--at` real steps. It flags a run when its first row's `Meta/ImaginedPreReturn` exceeds
`--threshold`, and prints, per seed, how many runs were flagged and the mean return at `--at`
with and without the flag.

The per-seed split matters: the warm-up's data and the initial policy come from the seed, so
whether the first models are exploitable is largely a property of the seed. A comparison
pooled over seeds mixes that with the seed's own luck. Reads metrics.csv and config.json only;
nothing is trained.
"""

import argparse
import collections
import csv
import glob
import json
import os
import sys

import numpy as np
from column_at_steps import value_at  # this folder's probes
from config_means import _RUN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="run-name prefix: hc, hopper, ...")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threshold", type=float, default=200.0)
    parser.add_argument("--at", type=int, default=100_000)
    parser.add_argument("--results", default="docs/results")
    args = parser.parse_args()
    by_seed: dict[int, list[tuple[bool, float]]] = collections.defaultdict(list)
    for run in sorted(glob.glob(os.path.join(args.results, f"{args.task}-*"))):
        match = _RUN.match(os.path.basename(run))
        metrics, config = os.path.join(run, "metrics.csv"), os.path.join(run, "config.json")
        if not match or not (os.path.isfile(metrics) and os.path.isfile(config)):
            continue
        with open(config) as f:
            if json.load(f).get("preset") != args.preset:
                continue
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
        final = value_at(rows, "PrePolicy/AverageReturn", args.at) if rows else float("nan")
        if np.isnan(final):
            continue
        first = float(rows[0]["Meta/ImaginedPreReturn"])
        by_seed[int(match["seed"])].append((first > args.threshold, final))
    if not by_seed:
        sys.exit(f"error: no {args.preset}-preset run of {args.task!r} reached {args.at:,} steps")

    def mean(values: list[float]) -> str:
        return f"{np.mean(values):6.0f} ({len(values)})" if values else "     - (0)"

    print(
        f"seed | runs | first meta phase imagined > {args.threshold:g} | "
        f"return at {args.at:,}: flagged (runs) | not flagged (runs)"
    )
    everything: list[tuple[bool, float]] = []
    for seed, runs in sorted(by_seed.items()):
        everything += runs
        flagged = [v for f, v in runs if f]
        other = [v for f, v in runs if not f]
        print(f"{seed:4d} | {len(runs):4d} | {len(flagged):4d} | {mean(flagged)} | {mean(other)}")
    flagged = [v for f, v in everything if f]
    other = [v for f, v in everything if not f]
    print(f" all | {len(everything):4d} | {len(flagged):4d} | {mean(flagged)} | {mean(other)}")


if __name__ == "__main__":
    main()
