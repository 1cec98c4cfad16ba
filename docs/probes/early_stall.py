"""Which Hopper runs fall into an early stall, from their metrics.csv alone.

A Hopper run that stalls narrows its policy onto a gait that falls before the episode's 200
steps (the dive that ends at about 93 steps, or a hop that falls at 120-145) and stays
there for tens of thousands of real steps. Over the committed Hopper runs the stalls show
by 30k real steps: episodes shorter than `--max_len` (default 115) at 30k, with the policy's
entropy (`Meta/Entropy`) already low at 20k. Prints per run the entropy at 10k and 20k, the
return and episode length at 30k (and at 100k where the run got there), the stall flag, and
per configuration (the directory name without its `-sN` seed suffix) the count of stalled
seeds.

    python docs/probes/early_stall.py docs/results/screen30k/*  [--max_len=115]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections import defaultdict


def _at(rows: list[dict[str, str]], steps: int, key: str) -> float | None:
    """The value of the last row at or before `steps` (None if that row is > 2,100 before)."""
    best = None
    for r in rows:
        n = float(r["n_timesteps"])
        if n <= steps:
            best = r
    if best is None or float(best["n_timesteps"]) < steps - 2100 or not best.get(key):
        return None
    return float(best[key])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--max_len", type=float, default=115.0)
    args = parser.parse_args(argv)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    print("| run | entropy 10k | entropy 20k | return 30k | length 30k | return 100k | stalled |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        path = os.path.join(run, "metrics.csv")
        if not os.path.exists(path):
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        with open(path) as f:
            rows = list(csv.DictReader(f))
        length = _at(rows, 30000, "PrePolicy/AverageLength")
        stalled = length is not None and length < args.max_len
        name = os.path.basename(os.path.normpath(run))
        config = re.sub(r"-s\d+$", "", name)
        if length is not None:
            counts[config][0] += int(stalled)
            counts[config][1] += 1
        print(
            f"| {name} | {fmt(_at(rows, 10000, 'Meta/Entropy'), '.2f')} "
            f"| {fmt(_at(rows, 20000, 'Meta/Entropy'), '.2f')} "
            f"| {fmt(_at(rows, 30000, 'PrePolicy/AverageReturn'), '.0f')} | {fmt(length, '.0f')} "
            f"| {fmt(_at(rows, 100000, 'PrePolicy/AverageReturn'), '.0f')} "
            f"| {'yes' if stalled else ('no' if length is not None else '-')} |"
        )
    print()
    for config, (n_stalled, n) in counts.items():
        print(f"{config}: {n_stalled} of {n} seeds stalled (length at 30k < {args.max_len:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
