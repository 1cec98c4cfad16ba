"""How long did a run take to reach N real steps, and where did the time go? (issue 14)

  PYTHONPATH=. python docs/probes/time_to_steps.py RUN_DIR [RUN_DIR ...] [--steps=100000]

Reads each run's `metrics.csv` (a committed `docs/results/<run>` is enough) and sums its
`Time/Fit`, `Time/Meta`, `Time/Collect`, `Time/Eval` and `Time/Iteration` columns over the
iterations up to the first row at or past --steps real steps (`n_timesteps`). The warm-up's
collection and the first compiles happen before the first row and are not counted. A run
that never reaches --steps is reported with the steps it did reach.
"""

import argparse
import math
import os
import sys

from mbmpo_jax.metrics import read_metrics

PHASES = ("Iteration", "Fit", "Meta", "Collect", "Eval")


def time_to_steps(rows, steps):
    """Sums of the phases' seconds up to the first row with n_timesteps >= steps.

    Returns (real steps reached, iterations counted, {phase: seconds}).
    """
    totals = dict.fromkeys(PHASES, 0.0)
    reached, count = 0.0, 0
    for row in rows:
        for phase in PHASES:
            value = row.get(f"Time/{phase}", math.nan)
            totals[phase] += 0.0 if math.isnan(value) else value
        reached, count = row["n_timesteps"], count + 1
        if reached >= steps:
            break
    return reached, count, totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories holding metrics.csv")
    parser.add_argument("--steps", type=float, default=100_000, help="real steps to reach")
    args = parser.parse_args(argv)
    for run in args.runs:
        path = os.path.join(run, "metrics.csv")
        if not os.path.isfile(path):
            print(f"error: no metrics.csv in {run}", file=sys.stderr)
            return 2
        reached, count, t = time_to_steps(read_metrics(path), args.steps)
        short = "" if reached >= args.steps else f" (run ends at {reached:,.0f})"
        print(
            f"{run}: {reached:,.0f} real steps in {count} iterations{short}: "
            + " ".join(f"{p.lower()} {t[p] / 60:.1f} min" for p in PHASES)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
