"""The paper's regularisation diagnostic on its 2-D point task (std vs KL over the plane).

  python -m experiments.policy_plasticity [--iterations=50] [--seed=0] [--alpha=0.001]
      [--out=runs/plasticity] [--rollouts=50] [--grid=41] [--bias_range=0.05]
      [--error_at_goal]

The paper's figure ("model ensemble standard deviation" next to "KL-div. pre-/post-update
policy" over the state space) comes from a 2-D point task with a hand-made ensemble, not
from MuJoCo (the authors' `policy_plasticity/` scripts). The set-up here follows their
description of it:

- task: a point in the plane, start states uniform in [2, 6]^2, goal (4, 4), horizon 30,
  reward -||s' - goal||, actions in [-1, 1] scaled to steps of at most 0.1 per axis;
- ensemble: K = 5 models that all predict the true step plus a model-specific bias
  b_k ~ U(-bias_range, bias_range)^2, scaled by an error mask that is 0 at the goal and
  grows quadratically with the distance from it, (min(d / d_max, 1))^2 with d_max = 2
  sqrt(2) the farthest start state; the biases are redrawn every iteration (the "fit"), so
  the models disagree away from the goal and agree at it. --error_at_goal flips the mask
  to (1 - min(d / d_max, 1))^2 (the authors' other variant): disagreement at the goal. The
  two variants together separate "KL follows the models' disagreement" from "KL follows
  wherever the policy is most sensitive". (The authors' version also adds
  Gaussian noise of std 0.01 around each bias and normalises the mask by the batch's
  largest distance; neither is reproduced here: dynamics are deterministic functions.)
- MB-MPO's meta-learning unchanged: 40 tasks (8 per model), one inner step with alpha,
  TRPO outer steps (KL 0.01), 10 meta steps per iteration.

After the last iteration, on a G x G grid over [1.5, 6.5]^2 (the start box and a margin):
the ensemble's std of the next-state predictions (mean over the 2 dimensions), and the
KL(pi_theta(.|s) || pi_theta'_t(.|s)) averaged over the 40 adapted policies of the last
meta step; their Pearson r over the grid is the number the paper's figure shows
qualitatively ("high correlation between model uncertainty and policy adaptability").
The within-iteration per-state r on the imagined states (`MetaDiagnostics.std_kl_corr`)
is printed per iteration as well.

Writes to --out (a new directory; an existing non-empty one is refused): plasticity.png
(the two maps side by side) and plasticity.json (r's, grids, settings).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from absl import app, flags

from experiments import _quiet  # noqa: F401
from experiments._cli import fail, own_flags_parser

_FLAGS = flags.FlagValues()
_ITERATIONS = flags.DEFINE_integer(
    "iterations", 50, "iterations (bias redraws)", flag_values=_FLAGS
)
_SEED = flags.DEFINE_integer("seed", 0, "random seed", flag_values=_FLAGS)
_ALPHA = flags.DEFINE_float("alpha", 1e-3, "inner step size", flag_values=_FLAGS)
_ROLLOUTS = flags.DEFINE_integer("rollouts", 50, "imagined rollouts per task", flag_values=_FLAGS)
_GRID = flags.DEFINE_integer("grid", 41, "grid points per axis", flag_values=_FLAGS)
_BIAS = flags.DEFINE_float("bias_range", 0.05, "models' bias range", flag_values=_FLAGS)
_AT_GOAL = flags.DEFINE_bool(
    "error_at_goal",
    False,
    "models disagree at the goal instead of away from it",
    flag_values=_FLAGS,
)
_OUT = flags.DEFINE_string(
    "out", os.path.join("runs", "plasticity"), "output directory", flag_values=_FLAGS
)

GOAL = (4.0, 4.0)
START_BOX = (2.0, 6.0)
GRID_BOX = (1.5, 6.5)
D_MAX = 2.0 * math.sqrt(2.0)
NUM_MODELS = 5
STEP_SCALE = 0.1


class PointGoalTask:
    """The authors' point task with rllab's action normalisation (actions in [-1, 1])."""

    obs_dim, act_dim = 2, 2

    def __init__(self):
        import numpy as np

        self.act_low = -np.ones(2, np.float32)
        self.act_high = np.ones(2, np.float32)

    def reward(self, obs, act, next_obs):
        import jax.numpy as jnp

        return -jnp.linalg.norm(next_obs - jnp.asarray(GOAL), axis=-1)

    def done(self, next_obs):
        import jax.numpy as jnp

        return jnp.zeros(next_obs.shape[:-1], bool)

    def init_obs(self, key, shape):
        import jax

        return jax.random.uniform(key, (*shape, 2), minval=START_BOX[0], maxval=START_BOX[1])


def error_mask(obs, at_goal=False):
    """``[..., 2] -> [...]``: 0 at the goal, (d / d_max)^2 away from it, 1 beyond d_max;
    with ``at_goal`` (a bool or 0/1 array) 1 at the goal and 0 beyond d_max."""
    import jax.numpy as jnp

    x = jnp.minimum(jnp.linalg.norm(obs - jnp.asarray(GOAL), axis=-1) / D_MAX, 1.0)
    return jnp.where(at_goal, (1.0 - x) ** 2, x**2)


def fake_model_step(model, obs, act):
    """One fake model: the true step plus its bias where the error mask is non-zero.

    ``model = {"bias": [2], "at_goal": []}`` (0 or 1, see ``error_mask``); ``obs``, ``act``:
    ``[B, 2]`` (actions already clipped).
    """
    mask = error_mask(obs, model["at_goal"] > 0)
    return obs + STEP_SCALE * act + mask[..., None] * model["bias"]


def meta_config(alpha: float, rollouts: int):
    from mbmpo_jax import maml

    return maml.MetaConfig(
        meta_batch_size=40,
        rollouts_per_task=rollouts,
        horizon=30,
        inner_lr=alpha,
        num_meta_steps=10,
    )


def grid_maps(theta, post_params, models, grid: int):
    """``(std [G, G], kl [G, G], xs [G])`` on the grid (rows: y, columns: x)."""
    import jax
    import jax.numpy as jnp

    from mbmpo_jax import maml
    from mbmpo_jax import policy as pol

    xs = jnp.linspace(GRID_BOX[0], GRID_BOX[1], grid)
    gx, gy = jnp.meshgrid(xs, xs)
    states = jnp.stack([gx.ravel(), gy.ravel()], -1)
    std = maml.disagreement(fake_model_step, models, states, jnp.zeros_like(states))
    mean0, log_std0 = pol.apply(theta, states)
    mean1, log_std1 = jax.vmap(pol.apply, in_axes=(0, None))(post_params, states)
    kl = pol.kl(mean0, log_std0, mean1, log_std1).mean(0)  # over the adapted policies
    return std.reshape(grid, grid), kl.reshape(grid, grid), xs


def run(
    iterations: int,
    seed: int,
    alpha: float,
    rollouts: int,
    grid: int,
    bias_range: float,
    error_at_goal: bool = False,
    log=print,
) -> dict:
    """Meta-trains on the fake ensemble; returns the grids, r's and settings."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mbmpo_jax import maml

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    cfg = meta_config(alpha, rollouts)
    task = PointGoalTask()
    # One compiled meta step called num_meta_steps times per iteration (rather than
    # make_meta_train's scan) so that the last call's theta is at hand for the maps.
    meta_step = jax.jit(maml.make_meta_step(cfg, task, fake_model_step))
    key = jax.random.PRNGKey(seed)
    key, k_init = jax.random.split(key)
    state = maml.init_meta_state(k_init, cfg, task.obs_dim, task.act_dim)
    history = []
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        key, k_bias = jax.random.split(key)
        bias = jax.random.uniform(k_bias, (NUM_MODELS, 2), minval=-bias_range, maxval=bias_range)
        models = {"bias": bias, "at_goal": jnp.full((NUM_MODELS,), float(error_at_goal))}
        steps = []
        for _ in range(cfg.num_meta_steps):
            theta = state.params
            state, post_params, diag = meta_step(state, models)
            steps.append(diag)
        d = jax.device_get(jax.tree.map(lambda *x: np.stack(x), *steps))
        row = {
            "iteration": it,
            "imagined_pre_return": float(np.mean(d.pre_return[-1])),
            "kl_pre_post": float(np.mean(d.kl_pre_post[-1])),
            "std_kl_corr_imagined_states": float(np.nanmean(d.std_kl_corr)),
            "accept_rate": float(np.mean(d.accepted)),
        }
        history.append(row)
        elapsed = time.perf_counter() - start
        log(
            f"it {it:3d}/{iterations} | imagined return {row['imagined_pre_return']:8.2f} | "
            f"KL(pre||post) {row['kl_pre_post']:.2e} | r(std, KL) on imagined states "
            f"{row['std_kl_corr_imagined_states']:+.3f} | {elapsed:.0f}s, ETA "
            f"{elapsed / it * (iterations - it):.0f}s"
        )
    # The maps: the last meta step's theta, its 40 adapted policies and its models.
    std, kl, xs = grid_maps(theta, post_params, models, grid)
    std, kl = np.asarray(std, np.float64), np.asarray(kl, np.float64)
    r = float(np.corrcoef(std.ravel(), kl.ravel())[0, 1]) if np.ptp(kl) > 0 else math.nan
    return {
        "r_grid": r,
        "std_grid": std.tolist(),
        "kl_grid": kl.tolist(),
        "axis": np.asarray(xs).tolist(),
        "biases": np.asarray(models["bias"]).tolist(),  # the last iteration's models
        "history": history,
        "settings": {
            "iterations": iterations,
            "seed": seed,
            "bias_range": bias_range,
            "error_at_goal": error_at_goal,
            "goal": GOAL,
            "start_box": START_BOX,
            "grid_box": GRID_BOX,
            "num_models": NUM_MODELS,
            "meta": dataclasses.asdict(cfg),
        },
    }


def plot_maps(result: dict, path: str) -> None:
    """The paper's two panels: ensemble std and KL(pre || post) over the plane."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent = (GRID_BOX[0], GRID_BOX[1], GRID_BOX[0], GRID_BOX[1])
    fig, axes = plt.subplots(2, 1, figsize=(4.5, 7.5), dpi=120)
    panels = (
        ("Model ensemble standard deviation", result["std_grid"]),
        ("KL-div. pre-/post-update policy", result["kl_grid"]),
    )
    for ax, (title, grid) in zip(axes, panels, strict=True):
        im = ax.imshow(grid, extent=extent, origin="lower")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.plot(*GOAL, "w+", markersize=10)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(f"Pearson r over the grid = {result['r_grid']:.3f}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    for name, flag, low in (
        ("iterations", _ITERATIONS, 1),
        ("rollouts", _ROLLOUTS, 1),
        ("grid", _GRID, 2),
    ):
        if flag.value < low:
            fail(f"--{name} must be >= {low}, got {flag.value}")
    if not (math.isfinite(_ALPHA.value) and _ALPHA.value >= 0):
        fail(f"--alpha must be finite and >= 0, got {_ALPHA.value}")
    if not (math.isfinite(_BIAS.value) and _BIAS.value > 0):
        fail(f"--bias_range must be positive, got {_BIAS.value}")
    out = _OUT.value
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        fail(f"--out={out} exists and is not an empty directory; choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        fail(f"cannot create --out={out}: {e.strerror or e}")
    result = run(
        _ITERATIONS.value,
        _SEED.value,
        _ALPHA.value,
        _ROLLOUTS.value,
        _GRID.value,
        _BIAS.value,
        _AT_GOAL.value,
    )
    try:
        with open(os.path.join(out, "plasticity.json"), "w") as f:
            json.dump(result, f)
        plot_maps(result, os.path.join(out, "plasticity.png"))
    except OSError as e:
        fail(f"cannot write into --out={out}: {e.strerror or e}", code=1)
    print(
        f"ensemble std vs KL(pre || post) over the {_GRID.value}^2 grid: r = {result['r_grid']:.3f}"
    )
    print(f"wrote {os.path.join(out, 'plasticity.png')} and plasticity.json")


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
