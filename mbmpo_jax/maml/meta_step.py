"""The MB-MPO meta step as one jittable pure function, and N of them in one ``lax.scan``.

One meta step (``make_meta_step``):

1. the pre-update policy ``theta`` samples ``R`` imaginary rollouts in each task's model;
2. inner step per task: ``theta'_k = theta + alpha grad J_k(theta)`` with the vanilla PG
   surrogate ``J_k = mean(log pi * A)`` (std params included); with
   ``num_inner_steps > 1`` each further step re-samples with the adapted params in the
   same model, MAML-style; ``alpha = 0`` is the ME-TRPO ablation (a shared policy);
3. the post-update policies ``theta'_k`` sample new rollouts;
4. outer step on ``theta`` for the meta-objective ``mean_k J_k(theta'_k(theta))``
   (``maml.meta_objective``, the likelihood-ratio surrogate on the post-update samples,
   differentiated *through* the inner step; the samples and advantages are constants):
   TRPO (the paper) or PPO-clip (RLlib), both given that one function as a closure.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax import imagine as imagine_lib
from mbmpo_jax import policy as pol
from mbmpo_jax import returns as returns_lib
from mbmpo_jax import sharding as sharding_lib
from mbmpo_jax.maml.diagnostics import std_kl_diagnostic
from mbmpo_jax.maml.objective import (
    INNER_UPDATES,
    PolicyBatch,
    broadcast_tasks,
    inner_step,
    likelihood_ratio,
    meta_objective,
    task_kl,
)
from mbmpo_jax.maml.outer import ppo_outer_step, trpo_outer_step
from mbmpo_jax.optim import ppo as ppo_lib

__all__ = [
    "MetaConfig",
    "MetaDiagnostics",
    "MetaState",
    "MetaStepFn",
    "init_meta_state",
    "make_meta_step",
    "make_meta_train",
]

Params = Any


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-learning hyperparameters; defaults are the paper's (original code's) values.

    The run config's ``meta`` section is generated from these fields and its ``policy``
    section from ``policy.PolicyConfig`` (``config.meta_config`` joins them), so the
    names, defaults and checks here are the only ones. Shape-deciding fields (sizes,
    counts, ``outer``, ``start_from``) are read at trace time; changing them means a new
    compile.
    """

    meta_batch_size: int = 20  # T, tasks; task i uses model i // (T / K)
    rollouts_per_task: int = 50  # R
    horizon: int = 200  # H
    inner_lr: float = 1e-3  # alpha; 0 gives ME-TRPO
    # the inner step's direction: "pg" (the paper's vanilla PG) | "std_invariant" (the
    # mean's part preconditioned by std^2: the step's KL does not grow as the std shrinks)
    inner_update: str = "pg"
    num_inner_steps: int = 1
    discount: float = 0.99
    gae_lambda: float = 1.0
    baseline_reg: float = 1e-5
    normalize_adv: bool = True
    obs_clip: float = 1000.0
    # the action the imagined reward is computed from: "sampled" (the policy's sample
    # before clipping, as the original code's imagined reward, whose control cost then also
    # penalises actions outside the bounds and so the policy's noise; its models also took
    # the unclipped action, which this does not) | "clipped" (the one the model steps with,
    # as the real environment; the cpu preset's). On HalfCheetah in the paper's
    # configuration 530 +- 87 against 200 +- 149 at 100k real steps (WORKSPACE.md, issue 15)
    reward_action: str = "sampled"
    # the action the models are fitted on (the real buffer) and step with in imagination:
    # "clipped" (the applied action) | "sampled" (the policy's sample before clipping, as
    # the original code, whose sampler stored the agent's action and whose models stepped
    # with it; the clip happened only where the action reached the physics)
    model_action: str = "clipped"
    # "reset": task.init_obs; "buffer": uniform draws from states passed to the step
    # (the real buffer's observations in a run: the paper's long-horizon variant).
    start_from: str = "reset"
    outer: str = "trpo"  # "trpo" (paper) | "ppo" (RLlib's port)
    max_kl: float = 0.01
    # beta of an entropy bonus on the outer objective (``maml.meta_objective``): 0 is the
    # paper's objective; > 0 slows the policy's std from collapsing onto its first gait
    entropy_coeff: float = 0.0
    cg_iters: int = 10
    cg_damping: float = 1e-5
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15
    # Fisher-vector products on every n-th rollout only (1 = all, as the paper). The
    # curvature estimate is all they feed; the line search checks the exact KL.
    fvp_subsample: int = 1
    # The std-vs-KL diagnostic evaluates all K models on about this many pre-update
    # states per task (rollout 0, strided), every meta step.
    diag_states_per_task: int = 50
    ppo_clip: float = 0.5  # RLlib's MB-MPO clip_param
    ppo_lr: float = 1e-3
    ppo_epochs: int = 8  # full-batch Adam steps per outer step
    ppo_kl_coeff: float = 5e-4  # initial adaptive coefficient of the pre-update KL penalty
    ppo_kl_target: float = 0.01
    num_meta_steps: int = 30  # per call of make_meta_train's function
    policy: pol.PolicyConfig = pol.PolicyConfig()

    def __post_init__(self):
        if self.outer not in ("trpo", "ppo"):
            raise ValueError(f"outer must be 'trpo' or 'ppo', got {self.outer!r}")
        for name in ("reward_action", "model_action"):
            value = getattr(self, name)
            if value not in imagine_lib.REWARD_ACTIONS:
                raise ValueError(
                    f"{name} must be one of {imagine_lib.REWARD_ACTIONS}, got {value!r}"
                )
        if self.start_from not in ("reset", "buffer"):
            raise ValueError(f"start_from must be 'reset' or 'buffer', got {self.start_from!r}")
        if self.inner_update not in INNER_UPDATES:
            raise ValueError(
                f"inner_update must be one of {INNER_UPDATES}, got {self.inner_update!r}"
            )
        if not self.entropy_coeff >= 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        if self.fvp_subsample < 1:
            raise ValueError("fvp_subsample must be >= 1")
        if self.num_inner_steps < 1:
            raise ValueError("num_inner_steps must be >= 1 (use inner_lr=0 for no adaptation)")


@flax.struct.dataclass
class MetaState:
    """Explicit state of the meta-learner.

    params: pre-update policy params ``theta`` (no leading axis).
    opt_state: optax Adam state for ``outer="ppo"``; ``()`` for TRPO.
    kl_coeff: PPO's adaptive KL-penalty coefficient (unused by TRPO).
    key: PRNG key for imagination.
    step: meta steps done.
    """

    params: Params
    opt_state: Any
    kl_coeff: jax.Array
    key: jax.Array
    step: jax.Array


class MetaDiagnostics(NamedTuple):
    """Per meta step (stacked ``[N, ...]`` by ``make_meta_train``).

    pre_return / post_return: ``[T]`` mean undiscounted imagined return per task of the
      pre-update policy (first sampling phase) / the final post-update policies.
    kl_pre_post: ``[T]`` mean KL(pre || post) on the pre-update samples (the paper relates
      it to the ensemble's disagreement).
    surr_before / surr_after: meta-objective (likelihood-ratio surrogate on the post
      samples) at the old / returned ``theta``.
    kl_after: mean KL(old post || new post) at the returned ``theta``.
    accepted: the outer step changed ``theta``.
    nonfinite: a non-finite loss/gradient/params was met and the step rejected.
    num_backtracks: TRPO line-search backtracks (0 for PPO).
    entropy: pre-update policy entropy.
    alive_frac: fraction of pre-update imagined steps before ``done``.
    model_std: ``[T]`` the ensemble's disagreement (``disagreement``) on task t's
      pre-update states (rollout 0, about ``cfg.diag_states_per_task`` of them).
    std_kl_corr: Pearson r, over those (task, state) pairs, between the disagreement and
      ``KL(pre || post_t)`` at the state: the paper's "adaptation does the work where the
      models disagree", measured within one meta step (nan when alpha = 0).
    """

    pre_return: jax.Array
    post_return: jax.Array
    kl_pre_post: jax.Array
    surr_before: jax.Array
    surr_after: jax.Array
    kl_after: jax.Array
    accepted: jax.Array
    nonfinite: jax.Array
    num_backtracks: jax.Array
    entropy: jax.Array
    alive_frac: jax.Array
    model_std: jax.Array
    std_kl_corr: jax.Array


def init_meta_state(
    key: jax.Array,
    cfg: MetaConfig,
    obs_dim: int,
    act_dim: int,
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> MetaState:
    """Fresh policy params (std ``cfg.policy.init_std``) and optimiser state.

    ``dtype``: of the params, the Adam moments and the KL coefficient (float32 by default;
    float64 needs ``jax_enable_x64``).

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    key_params, key = jax.random.split(key)
    params = pol.init(
        key_params,
        obs_dim,
        act_dim,
        cfg.policy.hidden,
        cfg.policy.init_std,
        cfg.policy.output_scale,
        dtype,
        normalize_obs=cfg.policy.normalize_obs,
    )
    opt_state = optax.adam(cfg.ppo_lr).init(params) if cfg.outer == "ppo" else ()
    return MetaState(
        params=params,
        opt_state=opt_state,
        kl_coeff=jnp.asarray(cfg.ppo_kl_coeff, dtype),
        key=key,
        step=jnp.zeros((), jnp.int32),
    )


# (state, models, start_obs=None, start_count=None) -> (state, post_params [T], diagnostics)
MetaStepFn = Callable[..., tuple[MetaState, Params, MetaDiagnostics]]


def _on_cpu(mesh: jax.sharding.Mesh) -> bool:
    return any(d.platform == "cpu" for d in mesh.devices.flat)


def make_meta_step(
    cfg: MetaConfig,
    task: Any,
    dynamics_fn: imagine_lib.DynamicsFn,
    mesh: jax.sharding.Mesh | None = None,
    lapack: bool | None = None,
) -> MetaStepFn:
    """Builds the pure, jittable meta step.

    Args:
      cfg: ``MetaConfig``.
      task: ``reward``, ``done``, ``init_obs``, ``act_low``, ``act_high`` (a TaskSpec).
      dynamics_fn: ``(model_k, obs[B, O], act[B, A]) -> next_obs[B, O]``.
      mesh: optional device mesh (``sharding.task_mesh``): every ``[T, ...]`` array is
        split over its ``tasks`` axis, so imagination and the per-task work run in
        parallel on all devices. ``None`` (or a mesh of one device): no constraints.
      lapack: the baseline fit by jaxlib's LAPACK kernels or by plain ``jnp`` ops
        (``returns.fit_linear_baseline``); default: LAPACK unless the mesh splits the
        tasks over several CPU devices, where a batched LAPACK kernel can hang the host.

    Returns:
      ``meta_step(state, models, start_obs=None, start_count=None)
      -> (state, post_params, diagnostics)``:

      - ``models``: dynamics params, leaves with a leading ``[K]`` axis, ``T % K == 0``.
      - ``start_obs`` ``[N, O]`` and ``start_count`` (int, valid prefix of ``start_obs``,
        default ``N``): start states drawn uniformly per rollout, required iff
        ``cfg.start_from == "buffer"`` (e.g. the buffer's observations and count).
      - ``post_params``: ``[T]`` post-update params that sampled this step's post-update
        rollouts (adapted from the *old* ``theta``), i.e. the original code's policies
        for the next real-data collection.
      - ``diagnostics``: ``MetaDiagnostics``.
    """
    num_tasks, r = cfg.meta_batch_size, cfg.rollouts_per_task
    # Tasks split over several CPU devices: no batched LAPACK kernel in the program (they
    # wait on the host's thread pool that the devices' programs hold; see
    # `returns.fit_linear_baseline`).
    if lapack is None:
        lapack = not (mesh is not None and mesh.devices.size > 1 and _on_cpu(mesh))

    def sample(key, params_t, models, start_obs, start_count):
        key_start, key_roll = jax.random.split(key)
        starts = None
        if cfg.start_from == "buffer":
            count = start_obs.shape[0] if start_count is None else start_count
            idx = jax.random.randint(key_start, (num_tasks, r), 0, jnp.maximum(count, 1))
            starts = start_obs[idx]
        rollouts = imagine_lib.imagine(
            key_roll,
            params_t,
            models,
            task,
            dynamics_fn,
            rollouts_per_task=r,
            horizon=cfg.horizon,
            start_obs=starts,
            obs_clip=cfg.obs_clip,
            reward_action=cfg.reward_action,
            model_action=cfg.model_action,
        )
        adv = returns_lib.compute_advantages(
            rollouts.obs,
            rollouts.rew,
            rollouts.mask,
            cfg.discount,
            cfg.gae_lambda,
            cfg.baseline_reg,
            cfg.normalize_adv,
            lapack=lapack,
        )
        batch = PolicyBatch(rollouts.obs, rollouts.act, adv.adv, rollouts.mask, rollouts.logp)
        return sharding_lib.shard_tasks((rollouts, batch), mesh)

    stride = max(1, cfg.horizon // max(cfg.diag_states_per_task, 1))
    # the per-sample surrogate of the meta-objective the outer step optimises
    sample_objective = (
        likelihood_ratio
        if cfg.outer == "trpo"
        else functools.partial(ppo_lib.clipped_objective, clip=cfg.ppo_clip)
    )

    def meta_step(state: MetaState, models, start_obs=None, start_count=None):
        if (cfg.start_from == "buffer") != (start_obs is not None):
            raise ValueError("start_obs must be given iff cfg.start_from == 'buffer'")
        ensemble_lib.task_to_member(num_tasks, ensemble_lib.num_members(models))
        key, *phase_keys = jax.random.split(state.key, cfg.num_inner_steps + 2)
        theta = state.params

        params_t = sharding_lib.shard_tasks(broadcast_tasks(theta, num_tasks), mesh)
        pre_list: list[PolicyBatch] = []
        for s in range(cfg.num_inner_steps):
            rollouts, batch = sample(phase_keys[s], params_t, models, start_obs, start_count)
            if s == 0:
                pre_rollouts = rollouts
            pre_list.append(batch)
            params_t = jax.vmap(inner_step, in_axes=(0, 0, None, None))(
                params_t, batch, cfg.inner_lr, cfg.inner_update
            )
            params_t = sharding_lib.shard_tasks(params_t, mesh)
        pre_batches = tuple(pre_list)
        post_params = params_t
        post_rollouts, post = sample(phase_keys[-1], post_params, models, start_obs, start_count)

        pre0 = pre_batches[0]
        pre_dist = jax.vmap(pol.apply)(broadcast_tasks(theta, num_tasks), pre0.obs)
        kl_pre_post = task_kl(pre_dist, post_params, pre0)
        model_std, std_kl_corr = std_kl_diagnostic(
            dynamics_fn, models, theta, post_params, pre0, stride
        )

        objective = functools.partial(
            meta_objective,
            pre_batches=pre_batches,
            post=post,
            inner_lr=cfg.inner_lr,
            sample_objective=sample_objective,
            inner_update=cfg.inner_update,
            entropy_coeff=cfg.entropy_coeff,
        )
        if cfg.outer == "trpo":
            new_theta, info = trpo_outer_step(objective, theta, pre_batches, post, post_params, cfg)
            opt_state, kl_coeff = state.opt_state, state.kl_coeff
        else:
            new_theta, opt_state, kl_coeff, info = ppo_outer_step(
                objective, theta, state.opt_state, state.kl_coeff, pre0, post, post_params, cfg
            )

        diag = MetaDiagnostics(
            pre_return=imagine_lib.undiscounted_return(pre_rollouts),
            post_return=imagine_lib.undiscounted_return(post_rollouts),
            kl_pre_post=kl_pre_post,
            surr_before=info.surr_before,
            surr_after=info.surr_after,
            kl_after=info.kl_after,
            accepted=info.accepted,
            nonfinite=info.nonfinite,
            num_backtracks=info.num_backtracks,
            entropy=jnp.mean(pol.entropy(pre_dist[1][:, 0, 0])),
            alive_frac=jnp.mean(pre_rollouts.mask),
            model_std=model_std,
            std_kl_corr=std_kl_corr,
        )
        new_state = MetaState(
            params=new_theta, opt_state=opt_state, kl_coeff=kl_coeff, key=key, step=state.step + 1
        )
        return new_state, post_params, diag

    return meta_step


def make_meta_train(
    cfg: MetaConfig,
    task: Any,
    dynamics_fn: imagine_lib.DynamicsFn,
    num_steps: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> MetaStepFn:
    """``num_steps`` (default ``cfg.num_meta_steps``) meta steps in one ``lax.scan``.

    ``mesh``: as in ``make_meta_step`` (tasks split over devices).

    Returns:
      ``run(state, models, start_obs=None, start_count=None)
      -> (state, post_params, diagnostics)`` with ``post_params`` ``[T]`` of the *last*
      meta step and every diagnostics leaf stacked ``[num_steps, ...]``. Pure and
      jittable, e.g. ``jax.jit(run, donate_argnums=0)``.
    """
    meta_step = make_meta_step(cfg, task, dynamics_fn, mesh)
    n = cfg.num_meta_steps if num_steps is None else num_steps

    def run(state: MetaState, models, start_obs=None, start_count=None):
        def body(carry, _):
            st, _ = carry
            st, post_params, diag = meta_step(st, models, start_obs, start_count)
            return (st, post_params), diag

        init_post = sharding_lib.shard_tasks(
            broadcast_tasks(state.params, cfg.meta_batch_size), mesh
        )
        (state, post_params), diags = jax.lax.scan(body, (state, init_post), None, length=n)
        return state, post_params, diags

    return run
