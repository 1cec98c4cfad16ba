"""What does a HalfCheetah run's buffer hold, oldest to newest? (issue 15, the late optimism)

  PYTHONPATH=. python docs/probes/buffer_blocks.py RUN_DIR [RUN_DIR ...] [--checkpoints=latest] \
      [--block=10000]

Restores a run's checkpoint and reads its real-transition buffer oldest first, in blocks of
--block transitions, printing per block: the mean forward speed (the observation's root x
velocity, obs[8]), the mean |pitch| (obs[1], `rooty`, radians), the share of transitions on
the back (|pitch| > pi / 2), the mean |action| and the actions' std, and the mean over
dimensions of |delta - the buffer's mean delta| / the buffer's delta std (how far the
block's state changes lie from the whole buffer's). `refit_optimism.py` found that removing a
run's oldest 20,000 transitions from the refit removes the late model optimism while removing
as many at random does not; this shows what those rows are. HalfCheetah only (the observation
layout: qpos[1:] then qvel). Needs the run's checkpoints (runs/).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagined_profile import _restore  # noqa: E402  (this folder's probes)

from mbmpo_jax import buffer as buffer_lib  # noqa: E402


def blocks(run_dir: str, wanted: str, block: int):
    cfg, _, state = _restore(run_dir, wanted)
    if cfg.env != "halfcheetah":
        raise SystemExit(f"{run_dir}: made for HalfCheetah's observation layout, not {cfg.env}")
    obs, act, next_obs = buffer_lib.valid_data(state.buffer)  # oldest first
    delta = next_obs - obs
    spread = np.abs(delta - delta.mean(0)) / (delta.std(0) + 1e-8)
    for start in range(0, len(obs), block):
        rows = slice(start, start + block)
        pitch = np.abs(obs[rows, 1])
        yield (
            start,
            min(start + block, len(obs)),
            float(obs[rows, 8].mean()),
            float(pitch.mean()),
            float(np.mean(pitch > np.pi / 2)),
            float(np.abs(act[rows]).mean()),
            float(act[rows].std()),
            float(spread[rows].mean()),
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--block", type=int, default=10_000)
    a = p.parse_args()
    if a.block < 1:
        p.error("--block must be >= 1")
    print(
        "run | rows (oldest first) | forward speed | mean |pitch| | on its back | mean |action| "
        "| action std | |delta - mean| / std"
    )
    for r in a.runs:
        name = os.path.basename(r.rstrip("/"))
        for first, last, speed, pitch, back, act_abs, act_std, spread in blocks(
            r, a.checkpoints, a.block
        ):
            print(
                f"{name} | {first:,}-{last:,} | {speed:.2f} | {pitch:.2f} | {back:.1%} | "
                f"{act_abs:.2f} | {act_std:.2f} | {spread:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
