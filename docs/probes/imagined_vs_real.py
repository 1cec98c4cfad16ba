"""Does a run's meta-policy exploit its models? Imagined against real return per step (issue 15).

  python docs/probes/imagined_vs_real.py RUN_DIR [RUN_DIR ...] [--last=10]

Reads each run's committed config.json + metrics.csv (nothing is trained) and prints, as the
median over its last --last iterations: the imagined pre-update return per imagined step
(`Meta/ImaginedPreReturn` / the run's `meta.horizon`), the real pre-update return per real
step (`PrePolicy/AverageReturn` / `PrePolicy/AverageLength`), their ratio, the adaptation
KL(pre || post) and the ensemble's std. Per step, so the 100-step imagination of the
HalfCheetah preset and the 200-step real episodes compare directly; an imagined rate well
above the real one is the meta-policy exploiting the models' errors.
"""

import argparse

import numpy as np

from experiments.plot import PlotError, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--last", type=int, default=10, help="iterations at the end (median)")
    args = parser.parse_args()
    if args.last < 1:
        parser.error("--last must be >= 1")
    print("run | real steps | imagined / step | real / step | ratio | KL(pre||post) | ens. std")
    for path in args.runs:
        try:
            run = load_run(path)
        except PlotError as e:
            parser.exit(2, f"error: {e}\n")
        horizon = run.config.get("meta", {}).get("horizon")
        if not horizon:
            parser.exit(2, f"error: {path}/config.json has no meta.horizon\n")
        rows = run.rows[-args.last :]

        def med(values: list[float]) -> float:
            return float(np.median(values))

        imagined = med([r["Meta/ImaginedPreReturn"] / horizon for r in rows])
        real = med([r["PrePolicy/AverageReturn"] / r["PrePolicy/AverageLength"] for r in rows])
        kl = med([r["Meta/KLPrePost"] for r in rows])
        ens = med([r["Model/EnsembleStd"] for r in rows])
        steps = int(rows[-1]["n_timesteps"])
        print(
            f"{path} | {steps:,} | {imagined:.2f} | {real:.2f} | {imagined / real:.2f} | "
            f"{kl:.2e} | {ens:.4f}"
        )


if __name__ == "__main__":
    main()
