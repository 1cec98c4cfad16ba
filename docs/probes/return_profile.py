"""Where does a run's return come from along the episode? (issue 15, Hopper's >= 750)

  PYTHONPATH=. python docs/probes/return_profile.py RUN_DIR [RUN_DIR ...] \
      [--checkpoints=latest] [--episodes=20]

Restores each run's checkpoint (its pre-update policy, as `experiments.render` does) and
runs --episodes episodes of the native MuJoCo task twice from the same initial states:
with sampled actions (what `PrePolicy/AverageReturn` measures, as the paper's evaluation
does) and with the mean action. For each it prints the return, the episode length and the
reward per step in windows of the episode (steps 0-25, 25-50, 50-100, 100-200 while
alive), so the part of a shortfall that is the start from rest, the part that is the
steady speed and the part that is the policy's exploration noise can be told apart.
Needs the run's checkpoints (runs/, not committed).
"""

import argparse
import functools
import os

import jax
import numpy as np

from experiments.render import _checkpoint_step, _load_config
from mbmpo_jax import mbmpo
from mbmpo_jax import policy as policy_lib
from mbmpo_jax.checkpoint import Checkpointer
from mbmpo_jax.envs.native import NativeEnv
from mbmpo_jax.envs.tasks import get_task

WINDOWS = ((0, 25), (25, 50), (50, 100), (100, 200))


@functools.partial(jax.jit, static_argnums=3)
def _act(params, key, obs, sampled: bool):
    """The pre-update policy's action: a Gaussian sample (as evaluated) or its mean."""
    mean, log_std = policy_lib.apply(params, obs)
    return policy_lib.sample(key, mean, log_std) if sampled else mean


def trajectories(task, params, episodes: int, horizon: int, sampled: bool, seed: int):
    """`episodes` episodes (no auto-reset): observations [horizon + 1, episodes, O], the
    actions as the environment applies them (clipped) [horizon, episodes, A], rewards and
    alive masks [horizon, episodes]."""
    env = NativeEnv(task, episodes)
    obs = env.reset(jax.random.PRNGKey(seed))
    key = jax.random.PRNGKey(seed + 1)
    alive = np.ones(episodes, bool)
    observations, actions, rewards, masks = [np.asarray(obs)], [], [], []
    for _ in range(horizon):
        key, k = jax.random.split(key)
        act = np.asarray(_act(params, k, obs, sampled))
        obs, reward, done = env.step(act)
        observations.append(np.asarray(obs))
        actions.append(np.clip(act, task.act_low, task.act_high))
        rewards.append(np.where(alive, reward, 0.0))
        masks.append(alive.copy())
        alive &= ~np.asarray(done, bool)
    return tuple(np.asarray(x) for x in (observations, actions, rewards, masks))


def episodes(task, params, episodes: int, horizon: int, sampled: bool, seed: int):
    """Rewards [horizon, episodes] and alive masks of `episodes` episodes (no auto-reset)."""
    return trajectories(task, params, episodes, horizon, sampled, seed)[2:]


def profile(rewards: np.ndarray, masks: np.ndarray, horizon: int) -> dict:
    out = {"return": rewards.sum(0).mean(), "length": masks.sum(0).mean()}
    for lo, hi in WINDOWS:
        if lo >= horizon:
            continue
        n = masks[lo:hi].sum()
        out[f"{lo}-{hi}"] = rewards[lo:hi].sum() / n if n else float("nan")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=123)
    a = p.parse_args()
    print(
        "run | real steps | actions | entropy | return | length | reward per alive step in "
        + ", ".join(f"{lo}-{hi}" for lo, hi in WINDOWS)
    )
    for r in a.runs:
        for c in a.checkpoints.split(","):
            cfg = _load_config(r)
            step = _checkpoint_step(r, c)
            trainer = mbmpo.Trainer(cfg)
            state = Checkpointer(r).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
            task = get_task(cfg.env, horizon=cfg.horizon)
            params = state.meta.params
            _, log_std = policy_lib.apply(params, np.zeros((1, task.obs_dim), np.float32))
            log_std = np.asarray(log_std)[0]
            entropy = float(np.sum(0.5 * np.log(2 * np.pi * np.e) + log_std))
            for sampled in (True, False):
                rew, mask = episodes(task, params, a.episodes, cfg.horizon, sampled, a.seed)
                prof = profile(rew, mask, cfg.horizon)
                windows = ", ".join(
                    f"{prof[f'{lo}-{hi}']:.2f}" for lo, hi in WINDOWS if f"{lo}-{hi}" in prof
                )
                print(
                    f"{os.path.basename(r.rstrip('/'))} | {int(state.n_timesteps):,} | "
                    f"{'sampled' if sampled else 'mean'} | {entropy:.2f} | "
                    f"{prof['return']:.0f} | {prof['length']:.0f} | {windows}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
