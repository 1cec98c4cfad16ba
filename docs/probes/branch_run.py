"""A run's copy that continues from its latest checkpoint with other meta-learning values.

Paired comparisons of the late phase: two copies of one run (same policy, ensemble, buffer
and keys at the branch point), one continued as it was, one with e.g. twice the outer steps
per iteration, tell whether that value holds the return back there, free of the seed-to-seed
spread that separate runs from scratch carry.

    python docs/probes/branch_run.py runs/hopper-cpu-100k-s0 runs/hopper-100k-s0-m60 \
        --config.meta.num_meta_steps=60
    taskset -c 1 python -m experiments.run --logdir=runs/hopper-100k-s0-m60 --resume \
        --config.total_steps=150000

Copies SOURCE (config, metrics, checkpoints; not its TensorBoard files or lock) to DEST,
applies the overrides to both of DEST's config files (the one a resume reads and the one
that tells a hand edit), so `--resume` continues the copy with them, and writes
DEST/branch.json (source, branch iteration and real steps, overrides) beside them: commit it
with the copy's config.json and metrics.csv, whose rows up to the branch are SOURCE's.
Only values that do not shape the checkpointed state may change (meta-learning step sizes
and counts, not sizes of the policy, the models or the buffer): the state is restored
against the new config's layout, so a shape change fails on resume with a restore error.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import shutil
import sys

from mbmpo_jax import config as config_lib

_COPIED = ("config.json", ".run_config.json", "metrics.csv", "checkpoints")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognised argument {item!r} (overrides are --config.FIELD=VALUE)")
        overrides.append(item[len("--config.") :])
    if not overrides:
        parser.error("give at least one --config.FIELD=VALUE to change")
    if os.path.exists(args.dest):
        parser.error(f"{args.dest} exists: choose a new directory (nothing is overwritten)")
    if os.path.exists(os.path.join(args.source, ".lock")):
        try:
            fd = os.open(os.path.join(args.source, ".lock"), os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)
        except BlockingIOError:
            parser.error(f"{args.source} is in use by a running process: branch it once stopped")
    for name in _COPIED:
        if not os.path.exists(os.path.join(args.source, name)):
            parser.error(f"{args.source} has no {name}: not a run directory with a checkpoint")
    with open(os.path.join(args.source, "config.json")) as f:
        cfg = config_lib.from_json(f.read())
    try:
        config_lib.apply_overrides(cfg, overrides)
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        parser.error(str(e))
    steps = sorted(
        int(d) for d in os.listdir(os.path.join(args.source, "checkpoints")) if d.isdigit()
    )
    if not steps:
        parser.error(f"{args.source}/checkpoints holds no checkpoint")

    os.makedirs(args.dest)
    for name in _COPIED:
        src, dst = os.path.join(args.source, name), os.path.join(args.dest, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    text = config_lib.to_json(cfg)
    for name in ("config.json", ".run_config.json"):
        with open(os.path.join(args.dest, name), "w") as f:
            f.write(text)
    with open(os.path.join(args.source, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    last = rows[-1] if rows else {}
    info = {
        "source": os.path.normpath(args.source),
        "branch_checkpoint": steps[-1],
        "branch_n_timesteps": int(float(last.get("n_timesteps", 0))),
        "overrides": overrides,
    }
    with open(os.path.join(args.dest, "branch.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(
        f"{args.dest}: {args.source} at checkpoint {steps[-1]} "
        f"({info['branch_n_timesteps']:,} real steps) with {' '.join(overrides)}; continue with\n"
        f"  python -m experiments.run --logdir={args.dest} --resume --config.total_steps=N"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
