"""Do a run's models see what its policy does late in the episode? (issue 15, HalfCheetah)

  PYTHONPATH=. python docs/probes/imagined_profile.py RUN_DIR [RUN_DIR ...] \
      [--checkpoints=latest] [--horizon=200] [--rollouts=20] [--from_real_step=100]

Restores each run's checkpoint and imagines its pre-update policy in every model of its
fitted ensemble for --horizon steps (one task per model, --rollouts rollouts each, from
the task's start states as the meta phase does with `start_from=reset`), with sampled
actions and with the mean action (log-std set to -20, floored at `policy.apply`'s
min_std), and prints the imagined reward per step in windows of the episode: 0-25, 25-50,
50-100, 100-200. Set beside `return_profile.py`'s real windows for the same checkpoint:
if the models keep the late reward high where the real episode loses it, a longer imagined
horizon would not show the policy the loss; if they lose it too, the meta phase's 100
imagined steps (`meta.horizon`) are what hide it.

With --from_real_step=N it first runs --rollouts real episodes (native MuJoCo, sampled
actions) and then, from each episode's real state at step N, (a) imagines the policy in
every model for the rest of the episode and (b) steps every model open loop with the
episode's own real actions; it prints the reward per step from step N on of the real
episodes, of (a) and of (b): whether the models foresee what really happens from a real
state, with the policy's actions and with the real ones (made for HalfCheetah, whose
episodes never end: on a terminating task an episode that ended before step N would start
from the state after its end). Needs the run's checkpoints (runs/).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from return_profile import (  # this folder's probe; the script's folder is on sys.path
    WINDOWS,
    profile,
    trajectories,
)

from experiments.render import _checkpoint_step, _load_config
from mbmpo_jax import dynamics, imagine, mbmpo
from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax.checkpoint import Checkpointer


def _restore(run_dir: str, wanted: str):
    """The run's config, a Trainer of it and its state at checkpoint `wanted`."""
    cfg = _load_config(run_dir)
    trainer = mbmpo.Trainer(cfg)
    step = _checkpoint_step(run_dir, wanted)
    state = Checkpointer(run_dir).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
    return cfg, trainer, state


def imagine_in_models(cfg, trainer, params, models, horizon: int, rollouts: int, start_obs=None):
    """The policy `params` imagined in each of the K `models` (one task per model), as the
    meta phase does: `rollouts` rollouts of `horizon` steps per model, from `start_obs`
    ([K, R, O]) or the task's start states, with the run's reward and model actions."""
    k = jax.tree.leaves(models)[0].shape[0]
    per_task = jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)), params)
    return imagine.imagine(
        jax.random.PRNGKey(7),
        per_task,
        models,
        trainer.task,
        trainer.dynamics_fn,
        rollouts_per_task=rollouts,
        horizon=horizon,
        start_obs=start_obs,
        reward_action=cfg.meta.get("reward_action", "clipped"),
        model_action=cfg.meta.get("model_action", "clipped"),
    )


def imagined(run_dir: str, wanted: str, horizon: int, rollouts: int) -> list[tuple]:
    cfg, trainer, state = _restore(run_dir, wanted)
    models = dynamics.model_params(state.ensemble)
    out = []
    for label, log_std in (("sampled", None), ("mean", -20.0)):
        params = dict(state.meta.params)
        if log_std is not None:
            params["log_std"] = jnp.full_like(params["log_std"], log_std)
        ro = imagine_in_models(cfg, trainer, params, models, horizon, rollouts)
        rew = np.asarray(ro.rew, np.float64)  # [K, R, H]
        per_model = rew.sum(-1).mean(-1)  # [K]
        # return_profile's windows over every model's rollouts as episodes: [H, K * R]
        as_episodes = lambda x: np.moveaxis(np.asarray(x, np.float64), -1, 0).reshape(horizon, -1)
        prof = profile(as_episodes(rew), as_episodes(ro.mask), horizon)
        windows = [prof.get(f"{lo}-{hi}", float("nan")) for lo, hi in WINDOWS]
        out.append(
            (
                os.path.basename(run_dir.rstrip("/")),
                int(state.n_timesteps),
                label,
                per_model,
                windows,
            )
        )
    return out


def from_real(run_dir: str, wanted: str, rollouts: int, start: int) -> dict:
    horizon = _load_config(run_dir).horizon
    if not 0 <= start < horizon:
        raise SystemExit(f"--from_real_step must be in [0, {horizon}) for {run_dir}, got {start}")
    cfg, trainer, state = _restore(run_dir, wanted)
    task = trainer.task
    models = dynamics.model_params(state.ensemble)
    k = jax.tree.leaves(models)[0].shape[0]
    obs, act, rew, mask = trajectories(task, state.meta.params, rollouts, cfg.horizon, True, 123)
    rest = cfg.horizon - start
    start_obs = np.broadcast_to(obs[start], (k, *obs[start].shape))  # [K, R, O]
    ro = imagine_in_models(
        cfg, trainer, state.meta.params, models, rest, rollouts, jnp.asarray(start_obs, jnp.float32)
    )
    closed = np.asarray(ro.rew, np.float64).sum() / max(np.asarray(ro.mask).sum(), 1.0)
    # open loop: model k steps task k's copy of the real states with the episodes' real
    # actions, every model in one call
    step = jax.jit(lambda m, o, a: ensemble_lib.apply_per_task(trainer.dynamics_fn, m, o, a))
    reward = jax.jit(jax.vmap(task.reward))
    done = jax.jit(jax.vmap(task.done))
    o = jnp.asarray(start_obs, jnp.float32)
    alive = np.ones(o.shape[:2], bool)
    total, count = 0.0, 0.0
    for t in range(start, cfg.horizon):
        a = jnp.asarray(np.broadcast_to(act[t], (k, *act[t].shape)), jnp.float32)
        nxt = step(models, o, a)
        r = np.asarray(reward(o, a, nxt), np.float64)
        total += np.where(alive, r, 0.0).sum()
        count += alive.sum()
        alive &= ~np.asarray(done(nxt), bool)
        o = nxt
    return {
        "run": os.path.basename(run_dir.rstrip("/")),
        "steps": int(state.n_timesteps),
        "real": rew[start:].sum() / max(mask[start:].sum(), 1.0),
        "closed": closed,
        "open": total / max(count, 1.0),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--rollouts", type=int, default=20)
    p.add_argument("--from_real_step", type=int, default=None)
    a = p.parse_args()
    if a.from_real_step is not None:
        n = a.from_real_step
        print(
            f"run | real steps | reward per alive step from step {n} on: real episodes | "
            "models, the policy's actions from the real state | models, the real actions"
        )
        for r in a.runs:
            for c in a.checkpoints.split(","):
                f = from_real(r, c, a.rollouts, n)
                print(
                    f"{f['run']} | {f['steps']:,} | {f['real']:.2f} | {f['closed']:.2f} | "
                    f"{f['open']:.2f}",
                    flush=True,
                )
        return
    print(
        "run | real steps | actions | imagined return per model | "
        "reward per alive step in 0-25, 25-50, 50-100, 100-200"
    )
    for r in a.runs:
        for c in a.checkpoints.split(","):
            for run, steps, label, per_model, windows in imagined(r, c, a.horizon, a.rollouts):
                models = ", ".join(f"{v:.0f}" for v in per_model)
                cells = ", ".join(f"{w:.2f}" for w in windows)
                print(f"{run} | {steps:,} | {label} | {models} | {cells}", flush=True)


if __name__ == "__main__":
    main()
