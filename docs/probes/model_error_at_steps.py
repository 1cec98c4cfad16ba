"""Median over runs of the models' logged error at given real-step counts (issue 15).

Reads committed ``metrics.csv`` files (``Model/ValidLoss``: the fit's validation loss;
``Model/OneStepMSE``: the one-step error on the iteration's fresh real data;
``Model/EpochsMean``: epochs per fit), takes each run's row nearest each step count, and
prints the median and range over the runs. Used to compare HalfCheetah's patience-5 fit
with the paper rule's (thirty-fifth session):

    python docs/probes/model_error_at_steps.py docs/results/hc-cpu-a1e4-s{0,1,2,3}
    python docs/probes/model_error_at_steps.py docs/results/hc-paper-h100-gpu-s{0,1,2}
    python docs/probes/model_error_at_steps.py docs/results/hc-paper-ra-gpu-s{0,1,2}
"""

from __future__ import annotations

import argparse
import os
import statistics

from mbmpo_jax.metrics import read_metrics

COLUMNS = ("Model/ValidLoss", "Model/OneStepMSE", "Model/EpochsMean")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="run directories holding metrics.csv")
    parser.add_argument("--at_steps", default="20000,40000,60000,100000")
    args = parser.parse_args()
    tables = [read_metrics(os.path.join(run, "metrics.csv")) for run in args.runs]
    for steps in (int(s) for s in args.at_steps.split(",")):
        rows = [min(t, key=lambda r: abs(r["n_timesteps"] - steps)) for t in tables]
        cells = []
        for col in COLUMNS:
            v = [r[col] for r in rows]
            cells.append(f"{col} {statistics.median(v):.4g} ({min(v):.4g}-{max(v):.4g})")
        print(f"{steps:>7,}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
