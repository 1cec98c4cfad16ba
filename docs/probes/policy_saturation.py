"""How saturated is the policy's first tanh layer on the states it visits? (issue 15)

  python docs/probes/policy_saturation.py RUN_DIR [RUN_DIR ...] [--checkpoints=latest]
      [--episodes=5]

Restores each run's checkpoint (its pre-update policy, as `experiments.render` does), runs
the mean action for --episodes 200-step episodes of the native MuJoCo task, and on the
visited states prints: the observation's std per dimension (the raw scale the policy
reads; HalfCheetah's joint velocities have std near 10), the median |pre-activation| of
the first and second hidden layers and the fraction of their units with |tanh| > 0.99
(saturated: a unit that is a sign function of its input, whose gradient is near zero),
and the first layer's weight rms (Glorot's for (17, 32) is 0.20). With
`policy.normalize_obs` the network reads the normalised observation, as in `apply`.
Needs the run's checkpoints (runs/, not committed).
"""

import argparse
import os

import jax
import numpy as np

from experiments.render import _checkpoint_step, _load_config
from mbmpo_jax import mbmpo
from mbmpo_jax import policy as policy_lib
from mbmpo_jax.checkpoint import Checkpointer
from mbmpo_jax.envs.native import NativeEnv
from mbmpo_jax.envs.tasks import get_task


def saturation(run_dir: str, wanted: str, episodes: int) -> dict:
    cfg = _load_config(run_dir)
    step = _checkpoint_step(run_dir, wanted)
    trainer = mbmpo.Trainer(cfg)
    state = Checkpointer(run_dir).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
    params = jax.device_get(state.meta.params)
    env = NativeEnv(get_task(cfg.env, horizon=cfg.horizon), episodes)
    obs = env.reset(jax.random.PRNGKey(123))
    act = jax.jit(lambda p, o: policy_lib.apply(p, o)[0])
    visited = []
    for _ in range(cfg.horizon):
        visited.append(np.asarray(obs, np.float64))
        obs, _, _ = env.step(np.asarray(act(params, obs)))
    x = np.concatenate(visited)
    h = x
    if "obs_norm" in params:
        h = (x - params["obs_norm"]["mean"]) / params["obs_norm"]["std"]
    pre, layers = [], params["layers"]
    for layer in layers[:-1]:
        z = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        pre.append(z)
        h = np.tanh(z)
    return {
        "run": os.path.basename(run_dir.rstrip("/")),
        "steps": int(state.n_timesteps),
        "obs_std": x.std(0),
        "median_abs_pre": [float(np.median(np.abs(z))) for z in pre],
        "saturated": [float(np.mean(np.abs(np.tanh(z)) > 0.99)) for z in pre],
        "w1_rms": float(np.sqrt(np.mean(np.square(layers[0]["w"])))),
        "normalised": "obs_norm" in params,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--episodes", type=int, default=5)
    args = p.parse_args()
    for run in args.runs:
        r = saturation(run, args.checkpoints, args.episodes)
        sat = ", ".join(f"{s:.2f}" for s in r["saturated"])
        pre = ", ".join(f"{m:.2f}" for m in r["median_abs_pre"])
        print(
            f"{r['run']} at {r['steps']:,}: saturated (|tanh| > 0.99) per layer {sat}; "
            f"median |pre-activation| {pre}; first-layer weight rms {r['w1_rms']:.3f}; "
            f"normalised input: {r['normalised']}"
        )
        print("  visited obs std: " + " ".join(f"{s:.1f}" for s in r["obs_std"]))


if __name__ == "__main__":
    main()
