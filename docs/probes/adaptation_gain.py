"""What the one inner policy-gradient step buys, from committed runs' metrics.csv: the mean
over iterations of (post-update - pre-update) return, imagined (`Meta/ImaginedPostReturn -
Meta/ImaginedPreReturn`: each task's adapted policy in its own model against the shared
policy, the last meta step of each iteration, pre and post on independent imagined samples)
and real (`PostPolicy/AverageReturn`, the adapted policies' collection episodes, against
`PrePolicy/AverageReturn`, the evaluation of the shared policy), with its standard error over
iterations, and the adaptation's KL(pre || post). With alpha = 0 the two policies are one,
so such a run shows the differences' noise.

    python docs/probes/adaptation_gain.py docs/results/hopper-cpu-fvp4-s{0,1,2} \
        docs/results/hopper-cpu-fvp4-a0-s{0,1,2} [--from=10000] [--to=101000]
"""

import csv
import json
import os
import statistics
import sys


def gain(rows, post, pre):
    d = [float(r[post]) - float(r[pre]) for r in rows]
    base = statistics.mean(abs(float(r[pre])) for r in rows)
    mean = statistics.mean(d)
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return mean, se, 100 * mean / base if base else float("nan")


def main(argv):
    lo, hi = 10_000.0, 101_000.0
    dirs = []
    for a in argv:
        if a.startswith("--from="):
            lo = float(a.split("=", 1)[1])
        elif a.startswith("--to="):
            hi = float(a.split("=", 1)[1])
        else:
            dirs.append(a)
    if not dirs:
        sys.exit("usage: adaptation_gain.py RUN_DIR... [--from=STEPS] [--to=STEPS]")
    print(f"iterations with {lo:,.0f} <= real steps <= {hi:,.0f}")
    print(
        "| run | alpha | iterations | imagined post - pre | real post - pre "
        "| KL(pre, post) median |"
    )
    print("|---|---|---|---|---|---|")
    for d in dirs:
        with open(os.path.join(d, "metrics.csv")) as f:
            rows = [r for r in csv.DictReader(f) if lo <= float(r["n_timesteps"]) <= hi]
        with open(os.path.join(d, "config.json")) as f:
            alpha = json.load(f)["meta"]["inner_lr"]
        im = gain(rows, "Meta/ImaginedPostReturn", "Meta/ImaginedPreReturn")
        real = gain(rows, "PostPolicy/AverageReturn", "PrePolicy/AverageReturn")
        kl = statistics.median(float(r["Meta/KLPrePost"]) for r in rows)
        print(
            f"| {os.path.basename(d.rstrip('/'))} | {alpha:g} | {len(rows)} | "
            f"{im[0]:+.2f} +- {im[1]:.2f} ({im[2]:+.2f}%) | "
            f"{real[0]:+.1f} +- {real[1]:.1f} ({real[2]:+.2f}%) | {kl:.1e} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
