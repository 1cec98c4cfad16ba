"""One MB-MPO iteration: collect real data -> fit the ensemble -> meta-learn the policy.

    real MuJoCo (executor) --transitions--> Buffer --fit--> ensemble (K models)
         ^                                                     |
         |                                 imagination: T tasks x R rollouts x H steps
         |                                                     |
    post-update policies [T] <--inner PG step-- pre-update samples; outer TRPO on theta

`Trainer(cfg)` builds, once, everything that is compiled (the ensemble fit, the N meta
steps in one `lax.scan`, the real executor's policy calls) and the real-data executors
(`mbmpo_jax.envs.executor`: native MuJoCo by default, or MJX). The run's whole state is
the explicit `TrainState` pytree: `iteration` maps a state to the next one,
deterministically for a given state, so a checkpoint of `TrainState` resumes a run exactly.

Per iteration (after the warm-up of `initial_random_steps` uniform-random steps, taken
with T environments that restart their episodes as they end):
  1. fit the ensemble on the buffer (per-model early stopping);
  2. `num_meta_steps` meta steps on the ensemble (pre-sample, inner step, post-sample,
     outer TRPO/PPO step);
  3. collect `config.steps_per_iteration(cfg)` real steps (the paper's T x horizon) with
     T environments, environment i always acting with post-update policy i of the last
     meta step (tailored exploration) and restarting from the reset distribution when its
     episode ends -> buffer; these steps are counted (`n_timesteps`) and the returns of
     the episodes that ended are `PostPolicy/AverageReturn`;
  4. evaluate the pre-update policy on `num_eval_rollouts` complete real episodes (not
     counted): `PrePolicy/AverageReturn`, the number the paper plots.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, maml, model_metrics, sharding
from mbmpo_jax import policy as policy_lib
from mbmpo_jax.envs import native
from mbmpo_jax.envs.executor import Executor, ExecutorFactory
from mbmpo_jax.envs.tasks import TaskSpec, get_task

__all__ = [
    "IterationKeys",
    "Learned",
    "NonFiniteError",
    "TrainState",
    "Trainer",
    "act_per_env",
    "act_shared",
    "default_models",
    "executor_of",
]


class NonFiniteError(FloatingPointError):
    """NaN/inf reached a place it must not (one-line message; the run stops resumably)."""


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue (checkpointed after every iteration).

    meta: `maml.MetaState` (policy params theta, outer optimiser state, imagination key).
    ensemble: `dynamics.EnsembleState` (params [K, ...], Adam state, normaliser).
    buffer: `buffer.Buffer` of real transitions (fixed capacity + count).
    key: the run's PRNG key for real-data collection and fits.
    iteration: iterations completed; n_timesteps: real steps collected (evaluation excluded).
    """

    meta: maml.MetaState
    ensemble: dynamics.EnsembleState
    buffer: buffer_lib.Buffer
    key: jax.Array
    iteration: jax.Array
    n_timesteps: jax.Array


@flax.struct.dataclass
class _TrainStateWithPostParams:
    """The checkpoint layout written before 2026-11-30 (issue 16): `TrainState` plus the
    [T]-stacked post-update params of the last meta step, which nothing ever read."""

    meta: maml.MetaState
    ensemble: dynamics.EnsembleState
    buffer: buffer_lib.Buffer
    post_params: Any
    key: jax.Array
    iteration: jax.Array
    n_timesteps: jax.Array

    def upgrade(self) -> TrainState:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainState)}
        return TrainState(**fields)


# The real executor's jitted step is keyed on these functions: module-level, so that every
# Trainer shares one compiled policy call per task.
def act_shared(params, key, obs):
    """One policy for every env: `obs [N, O] -> act [N, A]` (unclipped Gaussian sample).

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    mean, log_std = policy_lib.apply(params, obs)
    return policy_lib.sample(key, mean, log_std)


def act_per_env(params_t, key, obs):
    """Env i runs policy i of the [T]-stacked params: `obs [T, O] -> act [T, A]`.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    keys = jax.random.split(key, obs.shape[0])

    def one(p, k, o):
        mean, log_std = policy_lib.apply(p, o)
        return policy_lib.sample(k, mean, log_std)

    return jax.vmap(one)(params_t, keys, obs)


@jax.jit
def _set_obs_norm(params, buf):
    norm = dynamics.compute_normaliser(buf)
    return policy_lib.set_obs_norm(params, norm.obs_mean, norm.obs_std)


def set_policy_obs_norm(meta: maml.MetaState, buf: buffer_lib.Buffer) -> maml.MetaState:
    """The fresh policy's observation normaliser set to the buffer's statistics (the
    warm-up's); `meta` unchanged if the policy has none (``policy.normalize_obs`` off).

    Transforms: host-side Python around a jitted function (not for jit/vmap/grad).
    """
    if not policy_lib.normalizes_obs(meta.params):
        return meta
    return dataclasses.replace(meta, params=_set_obs_norm(meta.params, buf))


@jax.jit
def _renormalize(params, norm: dynamics.Normaliser):
    if norm.obs_mean.ndim == 1:
        return policy_lib.renormalize(params, norm.obs_mean, norm.obs_std)
    return jax.vmap(policy_lib.renormalize)(params, norm.obs_mean, norm.obs_std)  # [N] seeds


def renormalize_policy(meta: maml.MetaState, norm: dynamics.Normaliser) -> maml.MetaState:
    """The policy's observation normaliser moved to the fit's statistics `norm` (those of
    the buffer the models were just fitted on) without changing the policy's function
    (`policy.renormalize`); `meta` unchanged if the policy has none. Also for `[N]`-stacked
    seeds (`norm` leaves `[N, O]`).

    Transforms: host-side Python around a jitted function (not for jit/vmap/grad).
    """
    if not policy_lib.normalizes_obs(meta.params):
        return meta
    return dataclasses.replace(meta, params=_renormalize(meta.params, norm))


def executor_of(name: str) -> ExecutorFactory:
    """The executor factory a run config names (`config.EXECUTORS`).

    Transforms: host-side Python (not for jit/vmap/grad)."""
    if name == "native":
        return native.NativeExecutor
    if name == "mjx":
        from mbmpo_jax.envs import mjx_env  # imports brax and mujoco.mjx: only when asked

        return mjx_env.MjxExecutor
    raise ValueError(f"executor must be one of {', '.join(config_lib.EXECUTORS)}, got {name!r}")


def default_models(ens: dynamics.EnsembleState, key: jax.Array) -> Any:
    """`Trainer`'s default `models_fn`: the fitted ensemble's models as they are.

    Pure JAX (`seeds.SeedsTrainer` traces it under vmap)."""
    del key
    return dynamics.model_params(ens)


class IterationKeys(NamedTuple):
    """The five keys one iteration splits its state's key into (in this order)."""

    next: jax.Array  # the next state's key
    fit: jax.Array
    models: jax.Array
    collect: jax.Array
    eval: jax.Array


class Learned(NamedTuple):
    """What an iteration's compiled half produced: the fitted ensemble and its `FitInfo`
    (host arrays), the meta state, the [T] post-update params of the last meta step and the
    meta steps' diagnostics (host arrays, stacked over steps)."""

    ensemble: dynamics.EnsembleState
    fit_info: Any
    meta: maml.MetaState
    post_params: Any
    diags: Any


@functools.cache
def _compiled_meta_train(meta_cfg: maml.MetaConfig, task: TaskSpec, dynamics_fn, mesh):
    # Cached on the (hashable, frozen) configs: Trainers of one configuration in one
    # process share a single compilation.
    return sharding.jit_on_mesh(maml.make_meta_train(meta_cfg, task, dynamics_fn, mesh=mesh), mesh)


def _all_finite(tree) -> bool:
    return bool(
        jax.tree.reduce(lambda a, b: a & b, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree))
    )


def _mean_or_nan(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


def _std_or_nan(x: np.ndarray) -> float:
    return float(np.std(x)) if x.size else float("nan")


def _nanmean(values) -> float:
    """Mean of the finite entries (nan if none: e.g. the std-KL r's at alpha = 0)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


class Trainer:
    """Compiled phases and environments of one configuration (see the module docstring)."""

    def __init__(
        self,
        cfg: ml_collections.ConfigDict,
        task: TaskSpec | None = None,
        dynamics_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] = dynamics.model_step,
        models_fn: Callable[[dynamics.EnsembleState, jax.Array], Any] | None = None,
        executor: ExecutorFactory | None = None,
    ):
        """Builds the compiled phases and environments of `cfg`.

        Args:
          cfg: a validated run config (`config.get_config`).
          task: a custom `TaskSpec` (e.g. another reward on an existing model); default
            `get_task(cfg.env, horizon=cfg.horizon)`.
          dynamics_fn: `(model_k, obs [B, O], act [B, A]) -> next_obs [B, O]` used by
            imagination; default the ensemble's `dynamics.model_step`.
          models_fn: `(ensemble_state, key) -> models` (leaves with a leading [K] axis)
            that `dynamics_fn` reads, called once per iteration after the fit with a fresh
            key; default `dynamics.model_params(ensemble_state)`. E.g. the paper's
            robustness experiment adds a bias drawn every iteration.
          executor: `(task, num_envs) -> Executor`, the source of real data (the contract
            of `mbmpo_jax.envs.executor`); default `executor_of(cfg.executor)`:
            `native.NativeExecutor` (MuJoCo on the host) or `mjx_env.MjxExecutor` (MuJoCo
            XLA, one jitted program per call).
        """
        self.cfg = cfg
        self.task: TaskSpec = task if task is not None else get_task(cfg.env, horizon=cfg.horizon)
        self.dynamics_fn = dynamics_fn
        self.models_fn = models_fn or default_models
        self.ens_cfg = config_lib.ensemble_config(cfg)
        self.meta_cfg = config_lib.meta_config(cfg)
        t = self.meta_cfg.meta_batch_size
        executor = executor or executor_of(cfg.executor)
        self.collector: Executor = executor(self.task, t)
        self.evaluator: Executor = executor(self.task, cfg.num_eval_rollouts)
        self.steps_per_iteration = config_lib.steps_per_iteration(cfg)
        self.num_iterations = config_lib.iterations_of(cfg)
        # Tasks are split over all local devices (a single device is the mesh of one).
        self.mesh = sharding.task_mesh(t)
        self._replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self._meta_train = _compiled_meta_train(self.meta_cfg, self.task, dynamics_fn, self.mesh)
        self.model_steps_per_iteration = (
            cfg.meta.num_meta_steps
            * (cfg.meta.num_inner_steps + 1)
            * t
            * cfg.meta.rollouts_per_task
            * cfg.meta.horizon
        )

    # ------------------------------------------------------------------ state
    def empty_state(self, key: jax.Array) -> TrainState:
        """A fresh state with an empty buffer (also the template for restoring)."""
        k_meta, k_ens, key = jax.random.split(key, 3)
        meta = maml.init_meta_state(k_meta, self.meta_cfg, self.task.obs_dim, self.task.act_dim)
        ens = dynamics.init(k_ens, self.task.obs_dim, self.task.act_dim, self.ens_cfg)
        buf = buffer_lib.init(self.cfg.ensemble.buffer_size, self.task.obs_dim, self.task.act_dim)
        return TrainState(
            meta=meta,
            ensemble=ens,
            buffer=buf,
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            n_timesteps=jnp.zeros((), jnp.int32),
        )

    def older_layouts(self, key: jax.Array) -> list[tuple[Any, Callable[[Any], TrainState]]]:
        """`(template, upgrade)` of the checkpoint layouts earlier versions wrote, for
        `checkpoint.Checkpointer.restore(..., older=...)`: runs begun before a layout
        change still resume."""
        state = self.empty_state(key)
        post = maml.broadcast_tasks(state.meta.params, self.meta_cfg.meta_batch_size)
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState)}
        old = _TrainStateWithPostParams(post_params=post, **fields)
        return [(old, _TrainStateWithPostParams.upgrade)]

    def init(self, key: jax.Array) -> TrainState:
        """A fresh state whose buffer holds `initial_random_steps` uniform-random steps.

        The warm-up is collected like an iteration's data: T environments restarting their
        episodes as they end, until exactly `initial_random_steps` steps are taken.
        """
        state = self.empty_state(key)
        target = self.cfg.initial_random_steps
        if target == 0:
            return state
        key, k = jax.random.split(state.key)
        warm = self.collector.collect(native.uniform_policy(self.task), None, k, target)
        buf = self._add(state.buffer, warm.batch)
        return dataclasses.replace(
            state,
            meta=set_policy_obs_norm(state.meta, buf),
            buffer=buf,
            key=key,
            n_timesteps=jnp.asarray(warm.num_steps, jnp.int32),
        )

    def _add(self, buf, batch: native.RealBatch):
        """The batch's valid transitions into the buffer, padded to the batch's full size
        (one compiled add per collection size: the warm-up's and the iterations')."""
        obs, act, next_obs = batch.transitions(self.meta_cfg.model_action)
        if not (np.isfinite(obs).all() and np.isfinite(next_obs).all()):
            raise NonFiniteError(f"{self.task.name}: the simulator returned NaN/inf observations")
        n, size = obs.shape[0], batch.mask.size
        pad = lambda x: np.pad(x, ((0, size - n), (0, 0)))
        return buffer_lib.add_prefix(buf, pad(obs), pad(act), pad(next_obs), np.int32(n))

    def train(
        self,
        key: jax.Array,
        num_iterations: int | None = None,
        callback: Callable[[TrainState, dict[str, float]], None] | None = None,
    ) -> tuple[TrainState, list[dict[str, float]]]:
        """`init` then `num_iterations` (default: `config.iterations_of(cfg)`) iterations.

        `callback(state, metrics)` runs after every iteration (logging, early exit by
        raising). Returns the final state and the metrics of every iteration, in memory;
        `rundir.train` runs the same two calls in a run directory (metrics, a checkpoint
        per iteration, resume after any stop), which is what the CLI uses.
        """
        state = self.init(key)
        history = []
        for _ in range(self.num_iterations if num_iterations is None else num_iterations):
            state, metrics = self.iteration(state)
            history.append(metrics)
            if callback is not None:
                callback(state, metrics)
        return state, history

    # ------------------------------------------------------------------ iteration
    def iteration(
        self, state: TrainState, on_phase: Callable[[str], None] | None = None
    ) -> tuple[TrainState, dict[str, float]]:
        """Fit -> meta-learn -> collect with the adapted policies -> evaluate. Pure in state.

        `on_phase(name)` is called after each phase ("fit", "meta", "collect", "eval"):
        progress reporting, or fault injection in the reliability tests.
        """
        on_phase = on_phase or (lambda name: None)
        keys = IterationKeys(*jax.random.split(state.key, 5))
        times = {}

        start = time.perf_counter()
        ens, fit_info = dynamics.fit(state.ensemble, state.buffer, keys.fit, self.ens_cfg)
        fit_info = jax.device_get(fit_info)
        if not _all_finite(ens.params):
            raise NonFiniteError("dynamics fit produced non-finite model parameters")
        times["fit"] = time.perf_counter() - start
        on_phase("fit")

        start = time.perf_counter()
        models = self.models_fn(ens, keys.models)
        state = dataclasses.replace(state, meta=renormalize_policy(state.meta, ens.norm))
        meta, post_params, diags = self._meta_train(*self.meta_args(state, models))
        diags = jax.device_get(diags)
        times["meta"] = time.perf_counter() - start
        if not _all_finite(meta.params):  # the meta step rejects such steps; belt and braces
            raise NonFiniteError("meta step produced non-finite policy parameters")
        on_phase("meta")
        learned = Learned(ens, fit_info, meta, post_params, diags)
        return self.collect_and_evaluate(state, learned, keys, times, on_phase)

    def meta_args(self, state: TrainState, models: Any) -> tuple[Any, ...]:
        """The meta phase's arguments `(meta, models[, start obs, start count])`, placed
        replicated on the task mesh (also for `[N]`-stacked seeds' states). Placed every
        time, so the first call (fresh state) and later ones (states from the compiled
        phase) see the same shardings and nothing recompiles."""
        args: tuple[Any, ...] = (state.meta, models)
        if self.meta_cfg.start_from == "buffer":
            args += (state.buffer.obs, state.buffer.count)
        return jax.device_put(args, self._replicated)

    def collect_and_evaluate(
        self,
        state: TrainState,
        learned: Learned,
        keys: IterationKeys,
        times: dict[str, float],
        on_phase: Callable[[str], None] | None = None,
    ) -> tuple[TrainState, dict[str, float]]:
        """The iteration's real-data half: collect with `learned.post_params`, evaluate
        `learned.meta.params`, the next state and the metrics row (`times` gives the fit
        and meta phases' seconds). `iteration` and `seeds.SeedsTrainer` share it."""
        on_phase = on_phase or (lambda name: None)
        ens, fit_info, meta, post_params, diags = learned
        key, k_collect, k_eval = keys.next, keys.collect, keys.eval
        start = time.perf_counter()
        collected = self.collector.collect(
            act_per_env, post_params, k_collect, self.steps_per_iteration
        )
        batch = collected.batch
        buf = self._add(state.buffer, batch)
        n_new = collected.num_steps
        times["collect"] = time.perf_counter() - start
        on_phase("collect")

        start = time.perf_counter()
        evaluation = self.evaluator.rollout(act_shared, meta.params, k_eval)
        std, err, pred_finite = jax.device_get(
            model_metrics.ensemble_diagnostics(
                ens,
                batch.obs.reshape(-1, self.task.obs_dim),
                batch.actions(self.meta_cfg.model_action).reshape(-1, self.task.act_dim),
                batch.next_obs.reshape(-1, self.task.obs_dim),
                batch.mask.reshape(-1).astype(np.float32),
            )
        )
        times["eval"] = time.perf_counter() - start
        on_phase("eval")

        new_state = TrainState(
            meta=meta,
            ensemble=ens,
            buffer=buf,
            key=key,
            iteration=state.iteration + 1,
            n_timesteps=state.n_timesteps + n_new,
        )
        last = jax.tree.map(lambda x: x[-1], diags)
        metrics = {
            "iteration": float(new_state.iteration),
            "n_timesteps": float(new_state.n_timesteps),
            "PrePolicy/AverageReturn": float(evaluation.returns.mean()),
            "PrePolicy/StdReturn": float(evaluation.returns.std()),
            "PrePolicy/AverageLength": float(evaluation.mask.sum(1).mean()),
            # episodes of the adapted policies that ended within the collection
            "PostPolicy/AverageReturn": _mean_or_nan(collected.episode_returns),
            "PostPolicy/StdReturn": _std_or_nan(collected.episode_returns),
            "PostPolicy/AverageLength": _mean_or_nan(collected.episode_lengths),
            "PostPolicy/NumEpisodes": float(collected.episode_returns.size),
            "Model/TrainLoss": float(np.mean(fit_info.train_loss)),
            "Model/ValidLoss": float(np.mean(fit_info.valid_loss)),
            "Model/EpochsMean": float(np.mean(fit_info.epochs)),
            "Model/EpochsMax": float(np.max(fit_info.epochs)),
            "Model/EnsembleStd": float(std),
            "Model/OneStepMSE": float(err),
            "Model/Diverged": float(not pred_finite),
            "Meta/KLPrePost": float(np.mean(last.kl_pre_post)),
            "Meta/KLPrePostAllSteps": float(np.mean(diags.kl_pre_post)),
            "Diag/ImaginedEnsembleStd": float(np.mean(diags.model_std)),
            "Diag/StdKLCorrStates": _nanmean(diags.std_kl_corr),
            # per meta step, r over tasks of the disagreement and KL(pre || post)
            "Diag/StdKLCorrTasks": _nanmean(
                jax.vmap(maml.weighted_pearson)(
                    diags.model_std, diags.kl_pre_post, np.ones_like(diags.kl_pre_post)
                )
            ),
            **model_metrics.open_loop_metrics(ens, collected, self.meta_cfg.model_action),
            "Meta/ImaginedPreReturn": float(np.mean(last.pre_return)),
            "Meta/ImaginedPreLength": float(np.mean(last.alive_frac) * self.meta_cfg.horizon),
            "Meta/ImaginedPostReturn": float(np.mean(last.post_return)),
            "Meta/AcceptRate": float(np.mean(diags.accepted)),
            "Meta/NonFiniteSteps": float(np.sum(diags.nonfinite)),
            "Meta/Entropy": float(last.entropy),
            "Meta/SurrogateGain": float(np.mean(diags.surr_after - diags.surr_before)),
            # the outer steps' size: KL(old post || new post) on all post-update samples
            # at the returned theta (TRPO: below meta.max_kl), and the line search's work
            "Meta/StepKL": float(np.mean(diags.kl_after)),
            "Meta/Backtracks": float(np.mean(diags.num_backtracks)),
            "Time/Fit": times["fit"],
            "Time/Meta": times["meta"],
            "Time/Collect": times["collect"],
            "Time/Eval": times["eval"],
            "Time/Iteration": sum(times.values()),
            "Meta/ModelStepsPerSec": self.model_steps_per_iteration / max(times["meta"], 1e-9),
        }
        return new_state, metrics
