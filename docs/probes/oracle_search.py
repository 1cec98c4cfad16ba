"""How far does the meta phase's policy search get with perfect models? (issue 15)

  PYTHONPATH=. python docs/probes/oracle_search.py --env=hopper [--preset=cpu] [--seed=0]
      [--iterations=48] [--out=FILE.csv] [--config.FIELD=VALUE ...]

Every configuration measured leaves Hopper's surviving seeds at 650-710 at 100k real steps
(goal 750) with models that agree with the real episodes, and HalfCheetah's poor seeds in
gaits that the models predict correctly. Is that the models or the search? This probe runs
the run's own meta phase (`maml.make_meta_train` of the configuration: its tasks,
rollouts, imagined horizon, inner step, TRPO outer step, entropy bonus, all as the run
has them) with the true physics in place of the ensemble, and nothing else: no fit, no
real data. Its `dynamics_fn` is native MuJoCo called from the compiled program
(`jax.pure_callback`, one call per imagined step for the whole batch): the observation is
turned back into `qpos`, `qvel` (the coordinates the observation drops, x and for Ant y,
do not enter the dynamics) and stepped `frame_skip` physics steps with `mujoco.rollout`.
Where the observation clips the velocities (Hopper and Walker2d clip qvel to +-10) the
reconstructed state is the clipped one, the best any model reading the observation can do;
the probe counts how often a real episode's observation sits at the clip.

Each "iteration" is `meta.num_meta_steps` outer steps, as in a run, followed by the
run's evaluation of the pre-update policy (real episodes, native MuJoCo, sampled actions;
--eval_rollouts of them, 50 by default against a run's 10, the same mean with less noise):
so row i sits where a run's row i sits, after `initial_random_steps + i x
steps_per_iteration` real steps (the `real_steps_equiv` column), with the same number of
outer steps behind it. If the search with perfect models stops where the runs stop, the
models are not what holds the return there.

At start the oracle's step is checked against `NativeEnv.step` on 20 real episodes' states
(uniform random actions, 50 steps each): the largest observation error is printed.

Writes a CSV (one row per iteration) to --out, prints each row, and keeps the latest
pre-update policy's parameters beside the CSV (`OUT-policy.npz`, leaves by their tree path).
`--profile=OUT-policy.npz` reads it back: return per step in `return_profile.py`'s windows,
sampled and mean action, the share of steps with an observed |velocity| >= 10 and the
torso's pitch (a HalfCheetah on its back). `Real/ClippedVelShare` is the share of the real
episodes' steps whose observation clips a velocity (0 on the tasks that do not clip). With
--unclipped_obs every part (the policy's input, the oracle's state, the real episodes)
observes the raw velocities: a variant of the task that says whether the clip is what
separates the imagined return from the real one.
"""

import argparse
import csv
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout
from return_profile import WINDOWS, profile, trajectories  # this folder's probe

from mbmpo_jax import config as config_lib
from mbmpo_jax import maml, mbmpo
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task


class Oracle:
    """`(obs [..., O], act [..., A]) -> next_obs [..., O]` with the native physics (numpy)."""

    def __init__(self, task):
        self.task = task
        self.model = task.model
        m = self.model
        self.nq, self.nv = m.nq, m.nv
        self.dropped = m.nq + m.nv - task.obs_dim  # leading qpos entries the obs leaves out
        if self.dropped < 0:
            raise ValueError(f"{task.name}: the observation is not qpos[k:] ++ qvel")
        # The obs is affine in (qpos, qvel): its value at zero gives the offsets (Hopper's
        # and Walker2d's torso height); the linear part is the identity on the kept ones.
        self.offset = np.asarray(task.obs(np.zeros(m.nq), np.zeros(m.nv)), np.float64)
        self.spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        data = mujoco.MjData(m)
        mujoco.mj_resetData(m, data)
        self.template = np.empty(mujoco.mj_stateSize(m, self.spec))
        mujoco.mj_getState(m, data, self.template, self.spec)
        self.workers = [mujoco.MjData(m)]
        self.low = task.act_low.astype(np.float64)
        self.high = task.act_high.astype(np.float64)

    def state_of(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kept = self.nq - self.dropped
        x = obs - self.offset
        qpos = np.zeros((*obs.shape[:-1], self.nq))
        qpos[..., self.dropped :] = x[..., :kept]
        return qpos, x[..., kept:]

    def __call__(self, obs, act):
        shape = obs.shape
        obs = np.asarray(obs, np.float64).reshape(-1, shape[-1])
        act = np.clip(np.asarray(act, np.float64).reshape(obs.shape[0], -1), self.low, self.high)
        ok = np.all(np.isfinite(obs), axis=-1) & np.all(np.isfinite(act), axis=-1)
        qpos, qvel = self.state_of(np.where(ok[:, None], obs, self.offset))
        states = np.repeat(self.template[None], obs.shape[0], axis=0)
        states[:, 1 : 1 + self.nq] = qpos
        states[:, 1 + self.nq : 1 + self.nq + self.nv] = qvel
        skip = self.task.frame_skip
        control = np.repeat(np.where(ok[:, None], act, 0.0)[:, None], skip, axis=1)
        out, _ = mj_rollout.rollout(self.model, self.workers, states, control)
        last = out[:, -1]
        next_obs = self.task.obs(
            last[:, 1 : 1 + self.nq], last[:, 1 + self.nq : 1 + self.nq + self.nv]
        )
        next_obs = np.where(ok[:, None], next_obs, np.nan)
        return next_obs.astype(np.float32).reshape(shape)


def velocities(task) -> slice:
    """Where the observation holds `qvel` (its last `nv` entries, on every task here)."""
    return slice(task.obs_dim - task.model.nv, task.obs_dim)


def unclipped(task):
    """The task with the raw `qvel` as the observation's velocity part. The reward and done
    functions are the task's: the torso's x velocity they read never reaches the clip, and
    Hopper's |obs[3:]| < 100 test then reads raw velocities, as gym's state test does."""
    kept = velocities(task).start
    obs_fn = task.obs_fn

    def raw(qpos, qvel):
        obs = obs_fn(qpos, qvel)
        xp = np if isinstance(obs, np.ndarray) else jnp
        return xp.concatenate([obs[..., :kept], xp.asarray(qvel, obs.dtype)], axis=-1)

    return dataclasses.replace(task, obs_fn=raw)


def oracle_dynamics(oracle: Oracle):
    """A `DynamicsFn` that ignores its model and steps the physics on the host."""

    def dynamics_fn(model_k, obs, act):
        del model_k
        out = jax.ShapeDtypeStruct(obs.shape, jnp.float32)
        next_obs = jax.pure_callback(oracle, out, obs, act, vmap_method="broadcast_all")
        return next_obs.astype(obs.dtype)

    return dynamics_fn


def self_check(task, oracle: Oracle, key) -> tuple[float, float]:
    """Largest |oracle - native| over real random-action states, and the share of observed
    velocities that differ from the simulator's (clipped by the observation)."""
    env = native.NativeEnv(task, 20)
    obs = env.reset(key)
    rng = np.random.default_rng(0)
    worst, clipped, total = 0.0, 0, 0
    vel = velocities(task)
    for _ in range(50):
        act = rng.uniform(task.act_low, task.act_high, size=(20, task.act_dim))
        predicted = oracle(obs.astype(np.float32), act.astype(np.float32))
        true_qvel = np.stack([d.qvel for d in env.datas])  # the state `obs` observes
        clipped += int(np.sum(np.abs(true_qvel - obs[:, vel]) > 1e-6))
        total += obs[:, vel].size
        next_obs, _, done = env.step(act)
        worst = max(worst, float(np.max(np.abs(predicted - next_obs))))
        obs = next_obs
        if np.any(done):
            obs = env.reset(jax.random.fold_in(key, total))
    return worst, clipped / total


def save_policy(path: str, params) -> None:
    """The policy's leaves by their tree path (what `load_policy` reads back)."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})


def load_policy(path: str, cfg, task):
    """The policy params saved by a search (leaves by tree path) in the config's layout."""
    meta_cfg = config_lib.meta_config(cfg)
    template = maml.init_meta_state(jax.random.PRNGKey(0), meta_cfg, task.obs_dim, task.act_dim)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template.params)
    with np.load(path) as saved:
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        if sorted(names) != sorted(saved.files):
            sys.exit(f"error: {path} does not hold this configuration's policy")
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(saved[n]) for n in names])


def print_profile(cfg, task, path: str, episodes: int) -> None:
    """Return per step in `return_profile`'s windows (sampled and mean action), the share
    of steps with an observed |velocity| >= 10 (clipped where the task clips), and the
    torso's pitch (obs[1]; HalfCheetah on its back: |pitch| > pi / 2)."""
    params = load_policy(path, cfg, task)
    vel = velocities(task)
    for sampled in (True, False):
        obs, _, rewards, masks = trajectories(task, params, episodes, task.horizon, sampled, 7)
        prof = profile(rewards, masks, task.horizon)
        alive = masks.astype(bool)
        seen = obs[:-1][alive]
        windows = ", ".join(f"{lo}-{hi}: {prof[f'{lo}-{hi}']:.2f}" for lo, hi in WINDOWS)
        print(
            f"{'sampled' if sampled else 'mean   '}: return {prof['return']:.1f}, length "
            f"{prof['length']:.1f}; per step {windows}; steps with |velocity| >= 10 "
            f"{100 * np.mean(np.any(np.abs(seen[:, vel]) >= 10.0, -1)):.1f}%; pitch mean "
            f"{np.mean(seen[:, 1]):+.2f}, |pitch| > pi/2 on "
            f"{100 * np.mean(np.abs(seen[:, 1]) > np.pi / 2):.0f}% of steps"
        )


def config_from_args(env: str, preset: str, rest: list[str], extra: tuple[str, ...] = ()):
    """`(cfg, overrides)` from the `--config.FIELD=VALUE` arguments left by argparse (`extra`
    overrides go first); a one-line error and exit on anything else or an invalid config."""
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            sys.exit(f"error: unknown argument {item!r} (expected --config.FIELD=VALUE)")
        overrides.append(item[len("--config.") :])
    try:
        cfg = config_lib.get_config(env, preset)
        config_lib.apply_overrides(cfg, [*extra, *overrides])
        config_lib.validate(cfg)
    except (config_lib.ConfigError, ValueError) as e:
        sys.exit(f"error: {e}")
    return cfg, overrides


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="default: to total_steps")
    parser.add_argument("--out", default=None)
    parser.add_argument("--eval_rollouts", type=int, default=50, help="real episodes per row")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="NPZ",
        help="no search: read a saved policy (OUT-policy.npz of the same --env, --preset, "
        "--config and --unclipped_obs) and print its return profile and gait",
    )
    parser.add_argument(
        "--unclipped_obs",
        action="store_true",
        help="observe the raw qvel (a task variant: the policy, the oracle and the real "
        "episodes all see the unclipped velocities)",
    )
    args, rest = parser.parse_known_args()
    cfg, overrides = config_from_args(args.env, args.preset, rest)
    if cfg.policy.normalize_obs or cfg.meta.start_from != "reset":
        sys.exit("error: the probe runs the reset-start meta phase without the obs normaliser")
    task = get_task(cfg.env, horizon=cfg.horizon)
    if args.unclipped_obs:
        task = unclipped(task)
    if args.profile:
        return print_profile(cfg, task, args.profile, args.eval_rollouts)
    oracle = Oracle(task)
    key = jax.random.PRNGKey(args.seed)
    k_check, k_meta, key = jax.random.split(key, 3)
    worst, clip_share = self_check(task, oracle, k_check)
    print(
        f"{task.name}: oracle step against NativeEnv.step, max |obs error| {worst:.2e}; "
        f"observed velocities clipped: {100 * clip_share:.2f}%",
        flush=True,
    )

    meta_cfg = config_lib.meta_config(cfg)
    meta = maml.init_meta_state(k_meta, meta_cfg, task.obs_dim, task.act_dim)
    models = jnp.zeros((cfg.ensemble.num_models,), jnp.float32)  # K "members", all the physics
    meta_train = jax.jit(maml.make_meta_train(meta_cfg, task, oracle_dynamics(oracle)))
    evaluator = native.NativeExecutor(task, args.eval_rollouts)
    vel = velocities(task)
    clips = not np.allclose(task.obs(np.zeros(oracle.nq), np.full(oracle.nv, 20.0))[vel], 20.0)
    iterations = config_lib.iterations_of(cfg) if args.iterations is None else args.iterations
    per_iter = config_lib.steps_per_iteration(cfg)
    out = args.out or f"oracle-{task.name}-s{args.seed}.csv"
    if os.path.exists(out):
        sys.exit(f"error: {out} exists; not overwriting it")
    fields = [
        "iteration",
        "outer_steps",
        "real_steps_equiv",
        "PrePolicy/AverageReturn",
        "PrePolicy/AverageLength",
        "Real/ClippedVelShare",
        "Meta/PreReturn",
        "Meta/PreLength",
        "Meta/PostReturn",
        "Meta/Entropy",
        "Meta/KLPrePost",
        "Time/Meta",
    ]
    print(
        f"config: {cfg.env} preset={args.preset} {' '.join(overrides) or '(no overrides)'}; "
        f"{iterations} iterations x {cfg.meta.num_meta_steps} outer steps",
        flush=True,
    )
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for i in range(1, iterations + 1):
            key, k_eval = jax.random.split(key)
            start = time.perf_counter()
            meta, _, diags = meta_train(meta, models)
            diags = jax.device_get(diags)
            seconds = time.perf_counter() - start
            ev = evaluator.rollout(mbmpo.act_shared, meta.params, k_eval)
            row = {
                "iteration": i,
                "outer_steps": i * cfg.meta.num_meta_steps,
                "real_steps_equiv": cfg.initial_random_steps + i * per_iter,
                "PrePolicy/AverageReturn": float(ev.returns.mean()),
                "PrePolicy/AverageLength": float(ev.mask.sum(1).mean()),
                # steps of the real episodes whose observation clips a velocity
                "Real/ClippedVelShare": float(
                    np.sum(np.any(np.abs(ev.obs[..., vel]) >= 10.0, -1) & ev.mask) / ev.mask.sum()
                )
                if clips
                else 0.0,
                "Meta/PreReturn": float(np.mean(diags.pre_return[-1])),
                "Meta/PreLength": float(diags.alive_frac[-1]) * cfg.meta.horizon,
                "Meta/PostReturn": float(np.mean(diags.post_return[-1])),
                "Meta/Entropy": float(diags.entropy[-1]),
                "Meta/KLPrePost": float(np.mean(diags.kl_pre_post[-1])),
                "Time/Meta": seconds,
            }
            writer.writerow(row)
            f.flush()
            save_policy(os.path.splitext(out)[0] + "-policy.npz", meta.params)
            print(
                f"iter {i:3d} ({row['real_steps_equiv']:>7,} real-step equiv): real "
                f"{row['PrePolicy/AverageReturn']:7.1f} ({row['PrePolicy/AverageLength']:5.1f} "
                f"steps, clipped {100 * row['Real/ClippedVelShare']:.1f}%), imagined pre/post "
                f"{row['Meta/PreReturn']:7.1f}/{row['Meta/PostReturn']:7.1f} "
                f"({row['Meta/PreLength']:5.1f} steps), entropy {row['Meta/Entropy']:6.2f}, "
                f"meta {seconds:5.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
