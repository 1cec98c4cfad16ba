"""Which early signal of a run predicts its return at the end? (issue 15)

  python docs/probes/seed_predictors.py [--task=hc] [--end=100000] [--exclude=a0,h200]

Reads every committed run `docs/results/<task>-cpu-*` (config.json + metrics.csv), takes
each metric at a few step counts (linear interpolation, as `experiments.plot`), and
prints per run the values, then the Spearman rank correlation over runs of each signal
with the pre-update policy's real return at --end steps. Runs that stop before --end are
left out. Rank correlation (not Pearson): the runs span several configurations, so only
the ordering is compared. Reads files only; nothing is trained.
"""

import argparse
import glob
import os

import numpy as np

from experiments.plot import load_run, value_at

RET = "PrePolicy/AverageReturn"
SIGNALS = [
    (RET, 40e3),
    (RET, 70e3),
    ("PostPolicy/AverageReturn", 70e3),
    ("Meta/KLPrePost", 40e3),
    ("Meta/KLPrePost", 70e3),
    ("Meta/Entropy", 40e3),
    ("Meta/Entropy", 70e3),
    ("Model/ValidLoss", 40e3),
    ("Model/ValidLoss", 70e3),
    ("Model/OneStepMSE", 70e3),
    ("Meta/ImaginedPreReturn", 70e3),
]


def ranks(v):
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for u in np.unique(v):  # ties share their mean rank
        r[v == u] = r[v == u].mean()
    return r


def spearman(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return np.nan, int(ok.sum())
    return float(np.corrcoef(ranks(a[ok]), ranks(b[ok]))[0, 1]), int(ok.sum())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="hc")
    p.add_argument("--end", type=float, default=100e3)
    p.add_argument("--exclude", default="a0,h200", help="substrings of run names to skip")
    args = p.parse_args()
    skip = [s for s in args.exclude.split(",") if s]
    names = sorted(glob.glob(os.path.join("docs", "results", f"{args.task}-cpu-*")))
    names = [n for n in names if not any(s in os.path.basename(n) for s in skip)]
    table, kept = [], []
    for n in names:
        run = load_run(n)
        end = value_at(run, RET, args.end)
        if not np.isfinite(end):
            continue
        table.append([end] + [value_at(run, c, s) for c, s in SIGNALS])
        kept.append(os.path.basename(n))
    if len(kept) < 3:
        raise SystemExit(f"error: {len(kept)} runs reach {args.end:,.0f} steps; need 3")
    t = np.array(table)
    heads = [f"R@{args.end / 1e3:.0f}k"] + [
        f"{c.split('/')[-1]}@{s / 1e3:.0f}k" for c, s in SIGNALS
    ]
    print("run".ljust(24) + " ".join(h[:11].rjust(11) for h in heads))
    for name, row in zip(kept, t, strict=True):
        print(name.ljust(24) + " ".join(f"{v:11.4g}" for v in row))
    print(f"\nSpearman rank correlation with {RET} at {args.end:,.0f} steps:")
    for j, (c, s) in enumerate(SIGNALS, 1):
        rho, n = spearman(t[:, 0], t[:, j])
        print(f"  {c} at {s:,.0f}: {rho:+.2f} (n = {n})")


if __name__ == "__main__":
    main()
