"""When do the learnt models cost HalfCheetah its return: early, or all along? (issue 15)

  PYTHONPATH=. python docs/probes/oracle_then_models.py --env=halfcheetah [--preset=cpu]
      [--seed=0] [--oracle_iterations=8] [--iterations=N] --out=FILE.csv
      [--config.FIELD=VALUE ...]

`oracle_search.py` found that the preset's meta phase with the true physics in place of
the ensemble reaches 710 +- 54 on HalfCheetah at 100k real-step equivalents, where the
runs reach 476 +- 233 with two seeds in three on their backs or nose-down: the models hold
the return. This probe asks when. It runs a whole MB-MPO run (`mbmpo.Trainer` of the
configuration: fit, meta phase, collection with the adapted policies, evaluation) but
gives the meta phase the native physics (`oracle_search.oracle_dynamics`) for its first
--oracle_iterations iterations and the learnt ensemble after. The ensemble is fitted
from the first iteration on, on the data the run collects, so at the switch the models
are what a run's models would be on that data. If the policy keeps climbing upright once
the models take over, the poor basins are chosen early, while the models are poor; if it
falls into them after the switch, the models pull it there whatever the start.

With --oracle_iterations=0 it is `experiments.run` of the same seed (the same key and
iteration): `--check=RUN_DIR` prints each row's return beside RUN_DIR/metrics.csv's (equal
to the last digit against `hc-cpu-std05-s0` with `--config.policy.init_std=0.5` on its CPU).
Each row is the run's metrics row plus `Hybrid/Oracle` (1 while the physics stands in for
the models) and, on HalfCheetah, the pre-update policy's gait on 10 real episodes with the
mean action from fixed starts: `Gait/MeanPitch` (rad, the torso's pitch; positive is nose-
down), `Gait/FlippedShare` (steps with |pitch| > pi/2: on its back) and `Gait/MeanReturn`.
The latest pre-update policy is kept beside the CSV (`OUT-policy.npz`, `oracle_search.py
--profile` reads it), and the one at the switch as `OUT-switch-policy.npz`. No checkpoints:
a probe, not a run.
"""

import argparse
import csv
import os
import sys
import time

import jax
import numpy as np
from oracle_search import (  # this folder's probe
    Oracle,
    config_from_args,
    oracle_dynamics,
    save_policy,
    self_check,
)

from mbmpo_jax import mbmpo
from mbmpo_jax import policy as policy_lib
from mbmpo_jax.envs import native


def mean_action(params, key, obs):
    """The policy's mean action (no sampling), for the gait columns."""
    del key
    return policy_lib.apply(params, obs)[0]


def gait(task, evaluator, params) -> dict[str, float]:
    """Pitch, time on its back and return of the mean action on fixed starts."""
    ev = evaluator.rollout(mean_action, params, jax.random.PRNGKey(12345))
    pitch = ev.obs[..., 1]  # HalfCheetah's observation: qpos[1:] ++ qvel, qpos[2] the pitch
    mask = ev.mask.astype(bool)
    return {
        "Gait/MeanPitch": float(pitch[mask].mean()),
        "Gait/FlippedShare": float((np.abs(pitch[mask]) > np.pi / 2).mean()),
        "Gait/MeanReturn": float(ev.returns.mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle_iterations", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=None, help="default: to total_steps")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--check",
        default=None,
        metavar="RUN_DIR",
        help="with --oracle_iterations=0: compare the first rows with RUN_DIR/metrics.csv",
    )
    args, rest = parser.parse_known_args()
    cfg, _ = config_from_args(args.env, args.preset, rest, extra=(f"seed={args.seed}",))
    if args.oracle_iterations < 0:
        sys.exit("error: --oracle_iterations must be >= 0")
    if os.path.exists(args.out):
        sys.exit(f"error: {args.out} exists; not overwriting it")

    models = mbmpo.Trainer(cfg)
    task = models.task
    oracle = Oracle(task)
    worst, _ = self_check(task, oracle, jax.random.PRNGKey(1))
    print(f"{task.name}: oracle step against NativeEnv.step, max |obs error| {worst:.2e}")
    physics = mbmpo.Trainer(cfg, task=task, dynamics_fn=oracle_dynamics(oracle))
    evaluator = native.NativeExecutor(task, 10) if task.name == "halfcheetah" else None
    iterations = models.num_iterations if args.iterations is None else args.iterations
    reference = None
    if args.check:
        ref_path = os.path.join(args.check, "metrics.csv")
        if not os.path.isfile(ref_path):
            sys.exit(f"error: --check: {ref_path} does not exist")
        with open(ref_path) as f:
            reference = list(csv.DictReader(f))

    state = models.init(jax.random.PRNGKey(cfg.seed))
    base = os.path.splitext(args.out)[0]
    writer = None
    with open(args.out, "w", newline="") as f:
        for i in range(1, iterations + 1):
            oracle_on = i <= args.oracle_iterations
            start = time.perf_counter()
            state, metrics = (physics if oracle_on else models).iteration(state)
            row = {**metrics, "Hybrid/Oracle": float(oracle_on)}
            if evaluator is not None:
                row.update(gait(task, evaluator, state.meta.params))
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            save_policy(base + "-policy.npz", state.meta.params)
            if i == args.oracle_iterations:
                save_policy(base + "-switch-policy.npz", state.meta.params)
            gait_text = (
                f", pitch {row['Gait/MeanPitch']:+.2f} flipped "
                f"{100 * row['Gait/FlippedShare']:3.0f}% mean-action {row['Gait/MeanReturn']:6.1f}"
                if evaluator is not None
                else ""
            )
            print(
                f"iter {i:3d} ({int(row['n_timesteps']):>7,} real steps, "
                f"{'physics' if oracle_on else 'models '}): real "
                f"{row['PrePolicy/AverageReturn']:7.1f}, imagined "
                f"{row['Meta/ImaginedPreReturn']:7.1f}, one-step err "
                f"{row['Model/OneStepMSE']:.3f}, entropy {row['Meta/Entropy']:5.2f}"
                f"{gait_text}, {time.perf_counter() - start:5.1f} s",
                flush=True,
            )
            if reference is not None and i <= len(reference):
                ref = float(reference[i - 1]["PrePolicy/AverageReturn"])
                got = row["PrePolicy/AverageReturn"]
                print(f"  check: {args.check} row {i}: {ref:.4f}, here {got:.4f}", flush=True)


if __name__ == "__main__":
    main()
