"""What gait did a HalfCheetah run learn? Upright running or the flipped local optimum (issue 15).

  python docs/probes/hc_gait.py RUN_DIR [RUN_DIR ...] [--checkpoints=latest] [--episodes=5]

Restores each run's checkpoint (its pre-update policy, as `experiments.render` does), runs
the mean action for --episodes 200-step episodes of the native MuJoCo HalfCheetah from
different initial states, and prints the return, the mean forward speed (root x velocity)
and the torso's pitch (qpos[2], `rooty`, radians): a cheetah on its back has |pitch| near
pi. HalfCheetah's known poor optimum is running on its back or flipping; this tells it
from a slow upright gait. Needs the run's checkpoints (runs/, not committed).
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


def gait(run_dir: str, wanted: str, episodes: int) -> dict:
    cfg = _load_config(run_dir)
    step = _checkpoint_step(run_dir, wanted)
    trainer = mbmpo.Trainer(cfg)
    state = Checkpointer(run_dir).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
    task = get_task(cfg.env, horizon=cfg.horizon)
    env = NativeEnv(task, episodes)
    obs = env.reset(jax.random.PRNGKey(123))
    act = jax.jit(lambda p, o: policy_lib.apply(p, o)[0])
    ret = np.zeros(episodes)
    pitch, speed = [], []
    for _ in range(cfg.horizon):
        obs, reward, _ = env.step(np.asarray(act(state.meta.params, obs)))
        ret += np.asarray(reward)
        pitch.append([d.qpos[2] for d in env.datas])
        speed.append([d.qvel[0] for d in env.datas])
    pitch = np.asarray(pitch)  # [horizon, episodes]; rooty is a hinge: a somersault adds 2 pi
    return {
        "run": os.path.basename(run_dir.rstrip("/")),
        "steps": int(state.n_timesteps),
        "return": ret,
        "speed": np.mean(speed, axis=0),
        "pitch": pitch.mean(axis=0),
        "flipped": np.mean(np.abs(pitch) > np.pi / 2, axis=0),
        "low": pitch.min(axis=0),
        "high": pitch.max(axis=0),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--episodes", type=int, default=5)
    a = p.parse_args()
    print(
        "run | real steps | return | forward speed | mean pitch | time flipped | "
        "pitch range (per episode)"
    )
    for r in a.runs:
        for c in a.checkpoints.split(","):
            g = gait(r, c, a.episodes)
            ranges = ", ".join(
                f"{lo:+.1f}..{hi:+.1f}" for lo, hi in zip(g["low"], g["high"], strict=True)
            )
            print(
                f"{g['run']} | {g['steps']:,} | {g['return'].mean():.0f} | "
                f"{g['speed'].mean():.2f} | {g['pitch'].mean():+.2f} | "
                f"{g['flipped'].mean():.0%} | {ranges}",
                flush=True,
            )


if __name__ == "__main__":
    main()
