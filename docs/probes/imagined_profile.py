"""Do a run's models see what its policy does late in the episode? (issue 15, HalfCheetah)

  PYTHONPATH=. python docs/probes/imagined_profile.py RUN_DIR [RUN_DIR ...] \
      [--checkpoints=latest] [--horizon=200] [--rollouts=20]

Restores each run's checkpoint and imagines its pre-update policy in every model of its
fitted ensemble for --horizon steps (one task per model, --rollouts rollouts each, from
the task's start states as the meta phase does with `start_from=reset`), with sampled
actions and with the mean action (log-std set to -20, floored at `policy.apply`'s
min_std), and prints the imagined reward per step in windows of the episode: 0-25, 25-50,
50-100, 100-200. Set beside `return_profile.py`'s real windows for the same checkpoint:
if the models keep the late reward high where the real episode loses it, a longer imagined
horizon would not show the policy the loss; if they lose it too, the meta phase's 100
imagined steps (`meta.horizon`) are what hide it. Needs the run's checkpoints (runs/).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.render import _checkpoint_step, _load_config
from mbmpo_jax import dynamics, imagine, mbmpo
from mbmpo_jax.checkpoint import Checkpointer

WINDOWS = ((0, 25), (25, 50), (50, 100), (100, 200))


def profile(run_dir: str, wanted: str, horizon: int, rollouts: int) -> list[tuple]:
    cfg = _load_config(run_dir)
    step = _checkpoint_step(run_dir, wanted)
    trainer = mbmpo.Trainer(cfg)
    state = Checkpointer(run_dir).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
    models = dynamics.model_params(state.ensemble)
    k = jax.tree.leaves(models)[0].shape[0]
    out = []
    for label, log_std in (("sampled", None), ("mean", -20.0)):
        params = dict(state.meta.params)
        if log_std is not None:
            params["log_std"] = jnp.full_like(params["log_std"], log_std)
        per_task = jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)), params)
        ro = imagine.imagine(
            jax.random.PRNGKey(7),
            per_task,
            models,
            trainer.task,
            trainer.dynamics_fn,
            rollouts_per_task=rollouts,
            horizon=horizon,
            reward_action=cfg.meta.get("reward_action", "clipped"),
            model_action=cfg.meta.get("model_action", "clipped"),
        )
        rew = np.asarray(ro.rew, np.float64)  # [K, R, H]
        mask = np.asarray(ro.mask, np.float64)
        per_model = rew.sum(-1).mean(-1)  # [K]
        windows = []
        for lo, hi in WINDOWS:
            if lo >= horizon:
                windows.append(float("nan"))
                continue
            hi = min(hi, horizon)
            windows.append(rew[..., lo:hi].sum() / max(mask[..., lo:hi].sum(), 1.0))
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--rollouts", type=int, default=20)
    a = p.parse_args()
    print(
        "run | real steps | actions | imagined return per model | "
        "reward per alive step in 0-25, 25-50, 50-100, 100-200"
    )
    for r in a.runs:
        for c in a.checkpoints.split(","):
            for run, steps, label, per_model, windows in profile(r, c, a.horizon, a.rollouts):
                models = ", ".join(f"{v:.0f}" for v in per_model)
                cells = ", ".join(f"{w:.2f}" for w in windows)
                print(f"{run} | {steps:,} | {label} | {models} | {cells}", flush=True)


if __name__ == "__main__":
    main()
