"""The ensemble on its own: fit on random data, then measure open-loop prediction error.

The compounding-error curve from the slides: start each model at a real state, feed it
the real action sequence, and compare its open-loop prediction with the simulator's
trajectory at every horizon h. Errors compound with h.

    python -m examples.ensemble_compounding_error [--env=halfcheetah] [--horizon=50]
        [--out=FILE.png]

Bad flag values: one-line error, exit code 2.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import check_out, fail, own_flags_parser
from mbmpo_jax import buffer, dynamics
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import TASKS, get_task

# A FlagValues of its own: the examples can be imported together (tests) without clashing.
_FLAGS = flags.FlagValues()
_ENV = flags.DEFINE_enum("env", "halfcheetah", list(TASKS), "task", flag_values=_FLAGS)
_HORIZON = flags.DEFINE_integer(
    "horizon", 50, "open-loop steps (and real episode length)", lower_bound=1, flag_values=_FLAGS
)
_OUT = flags.DEFINE_string("out", None, "optional PNG of the curve", flag_values=_FLAGS)


def open_loop(models: dynamics.Model, obs0: jax.Array, acts: jax.Array) -> jax.Array:
    """Open-loop predictions of every model: obs0 [N, O], acts [N, H, A] -> [K, N, H, O]."""

    def one_model(model_k):
        def step(obs, act):
            nxt = dynamics.model_step(model_k, obs, act)
            return nxt, nxt

        _, traj = jax.lax.scan(step, obs0, jnp.swapaxes(acts, 0, 1))
        return jnp.swapaxes(traj, 0, 1)

    return jax.vmap(one_model)(models)


def run(
    env: str = "halfcheetah",
    train_rollouts: int = 40,
    test_rollouts: int = 10,
    horizon: int = 50,
    hidden: tuple[int, ...] = (512, 512),
    num_models: int = 5,
    max_epochs: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Returns {"horizon": [H], "mse": [H] (ensemble mean), "mse_per_model": [K, H],
    "mse_persistence": [H] (predicting that the state never changes, for reference)}."""
    task = get_task(env, horizon=horizon)
    key = jax.random.PRNGKey(seed)
    k_train, k_test, k_init, k_fit = jax.random.split(key, 4)

    # Real data from uniform-random actions, as MB-MPO's first iteration collects.
    train = native.rollout(
        native.NativeEnv(task, train_rollouts), native.uniform_policy(task), None, k_train
    )
    buf = buffer.init(train.num_steps, task.obs_dim, task.act_dim)
    buf = buffer.add(buf, *train.transitions())

    cfg = dynamics.EnsembleConfig(num_models=num_models, hidden=hidden, max_epochs=max_epochs)
    ens = dynamics.init(k_init, task.obs_dim, task.act_dim, cfg)
    ens, info = dynamics.fit(ens, buf, k_fit)
    print(f"fit: epochs per model {np.asarray(info.epochs)}, valid loss {info.valid_loss}")

    # Held-out real trajectories; only episodes that never ended are compared.
    test = native.rollout(
        native.NativeEnv(task, test_rollouts), native.uniform_policy(task), None, k_test
    )
    full = test.mask.all(axis=1)
    obs0, acts, real = test.obs[full, 0], test.act[full], test.next_obs[full]
    pred = jax.jit(open_loop)(dynamics.model_params(ens), obs0, acts)  # [K, N, H, O]
    per_model = np.asarray(jnp.mean(jnp.square(pred - real[None]), axis=(1, 3)))  # [K, H]
    mean_pred = np.asarray(pred).mean(axis=0)
    mse = np.mean(np.square(mean_pred - real), axis=(0, 2))  # [H]
    # Reference: the persistence predictor (the state never changes).
    persistence = np.mean(np.square(obs0[:, None] - real), axis=(0, 2))
    return {
        "horizon": np.arange(1, horizon + 1),
        "mse": mse,
        "mse_per_model": per_model,
        "mse_persistence": persistence,
    }


def _check_out(path: str) -> None:
    """Fails fast (before the fit) on an --out that matplotlib cannot write."""
    from matplotlib.backend_bases import FigureCanvasBase

    ext = os.path.splitext(path)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats and not os.path.isdir(path):
        fail(f"--out={path}: unknown image format {ext!r}; valid: {', '.join(sorted(formats))}")
    check_out(path, force=True)  # a figure is redrawn in place


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    env, horizon, out = _ENV.value, _HORIZON.value, _OUT.value
    if out:
        _check_out(out)
    result = run(env=env, horizon=horizon)
    for h in (1, 5, 10, 20, 50, 100):
        if h <= horizon:
            print(f"h={h:>3}  open-loop MSE of the ensemble mean: {result['mse'][h - 1]:.4f}")
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.semilogy(result["horizon"], result["mse_per_model"].T, color="0.7", lw=0.8)
        plt.semilogy(result["horizon"], result["mse"], color="C0", lw=2, label="ensemble mean")
        plt.xlabel("open-loop steps")
        plt.ylabel("MSE vs real simulator")
        plt.title(f"{env}: compounding model error")
        plt.legend()
        try:
            plt.savefig(out, dpi=100)
        except OSError as e:
            fail(f"cannot write --out={out}: {e.strerror or e}", code=1)
        print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
