"""Run configuration: the paper's values per task, presets, overrides and validation.

`get_config(env, preset)` returns an `ml_collections.ConfigDict`; `apply_overrides` takes
`["a.b=value", ...]` (what `--config.a.b=value` flags carry) and `validate` checks the whole
config before anything starts. Every error is a `ConfigError` with a one-line message.

Presets:
  paper  the paper's configuration (the default): 5 x (512, 512) models, 20 tasks x 50
         imagined rollouts x 200 steps, 30 TRPO meta steps, 5,000 warm-up steps, then
         100 iterations of 4,000 real steps (405,000 real steps).
  cpu    for 2 CPU cores: 5 x (256, 256) models (the paper's (512, 512) with weight norm
         on HalfCheetah, measured), 10 tasks x 20 imagined rollouts x 200
         steps (as far as a real episode lasts; 100 on HalfCheetah, measured better), 20
         meta steps, 2,000 real steps per iteration; run length per task (HalfCheetah 100k
         real steps, Hopper 150k, Ant, Walker2d and Swimmer 200k); on the Ant a policy that
         starts near rest (std 0.5, last layer x 0.01; measured).
  smoke  a whole run in well under 3 minutes on 2 CPU cores (tests, the README's demo).

Run length is counted in real steps, the paper's x-axis: `total_steps` (warm-up included)
and `steps_per_iteration` (0: `meta_batch_size x horizon`, the paper's 20 x 200) give the
number of iterations (`iterations_of`); `num_iterations > 0` overrides that count.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import ml_collections

from mbmpo_jax.dynamics import ACTIVATIONS, COMPUTE_DTYPES, EnsembleConfig
from mbmpo_jax.envs.tasks import TASKS
from mbmpo_jax.maml import INNER_UPDATES, MetaConfig
from mbmpo_jax.policy import PolicyConfig

__all__ = [
    "EXECUTORS",
    "PRESETS",
    "ConfigError",
    "apply_overrides",
    "ensemble_config",
    "get_config",
    "iterations_of",
    "leaves",
    "meta_config",
    "steps_per_iteration",
    "to_json",
    "validate",
]

PRESETS = ("paper", "cpu", "smoke")
EXECUTORS = ("native", "mjx")  # `mbmpo.executor_of` maps the names to the executors


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the field."""


def _section(dc: Any, skip: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A config section holding the fields (and values) of the dataclass instance ``dc``."""
    return ml_collections.ConfigDict(
        {f.name: getattr(dc, f.name) for f in dataclasses.fields(dc) if f.name not in skip}
    )


def ensemble_config(cfg: ml_collections.ConfigDict) -> EnsembleConfig:
    """The ``dynamics.EnsembleConfig`` of a run config's ``ensemble`` section.

    Raises ``ConfigError`` (one line, naming the section) on a value its checks refuse.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    return _build(EnsembleConfig, cfg.ensemble, "ensemble")


def meta_config(cfg: ml_collections.ConfigDict) -> MetaConfig:
    """The ``maml.MetaConfig`` of a run config's ``meta`` and ``policy`` sections.

    Raises ``ConfigError`` (one line, naming the section) on a value its checks refuse.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    policy = _build(PolicyConfig, cfg.policy, "policy")
    return _build(MetaConfig, cfg.meta, "meta", policy=policy)


def _build(cls: Any, section: ml_collections.ConfigDict, name: str, **extra: Any) -> Any:
    kwargs = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}
    try:
        return cls(**kwargs, **extra)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {e}") from None


def _paper(env: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.env = env
    c.preset = "paper"
    c.seed = 0
    c.horizon = 200  # real episodes
    # Run length in real steps (warm-up included): 5,000 + 100 iterations x 4,000.
    c.total_steps = 405_000
    c.num_iterations = 0  # > 0: this many iterations, whatever total_steps says
    c.steps_per_iteration = 0  # real steps per iteration; 0: meta_batch_size x horizon
    c.initial_random_steps = 5000
    c.num_eval_rollouts = 20  # pre-update policy on the real env; not counted as steps
    c.checkpoint_keep = 3
    # Where real data comes from (`mbmpo_jax.envs.executor`): "native" (MuJoCo on the
    # host, fastest on a CPU) or "mjx" (MuJoCo XLA, one jitted program per collection).
    c.executor = "native"

    # The sections are generated from the library's frozen dataclasses: their field names,
    # defaults (the paper's) and checks are the only ones (`ensemble_config`, `meta_config`).
    c.ensemble = _section(EnsembleConfig())
    c.ensemble.buffer_size = 100_000  # real transitions kept for the fit (FIFO)
    c.policy = _section(PolicyConfig())
    c.meta = _section(MetaConfig(), skip=("policy",))
    return c


# The cpu preset's run length per task (real steps): the paper's HalfCheetah and Hopper
# comparisons are at 100k (Hopper to 150k, to see whether it holds); the others to 200k.
_CPU_TOTAL_STEPS = {"halfcheetah": 100_000, "hopper": 150_000}
# The cpu preset imagines as far as a real episode lasts (200 steps), except on HalfCheetah:
# there 100 imagined steps did better (WORKSPACE.md, issue 14: at 60k real steps 322 and 460
# with 100 against 205 with 200; the cheetah never terminates, so nothing after step 100 is
# left unseen by a policy that runs the same gait throughout).
_CPU_IMAGINED_HORIZON = {"halfcheetah": 100}
# The cpu preset's early stop of the fit (`ensemble.patience`) where it was measured not to
# cost learning: on HalfCheetah the fit became 11x cheaper (to 100k real steps in 12 min on
# one core) with returns within the seed spread; on Hopper it left the models' validation
# loss 2x higher and the return 150-200 lower at 30k-50k real steps, so it stays off there
# and on the tasks not measured (WORKSPACE.md, issue 18).
_CPU_PATIENCE = {"halfcheetah": 5}
# The cpu preset's dynamics models: (hidden, weight_norm). The paper's (512, 512) with weight
# norm on HalfCheetah: at 100k real steps 854 / 361 / 335 (seeds 0, 1, 2) against 371 / 258 /
# 261 with (256, 256), higher on every seed, at about 5x the fit's cost (WORKSPACE.md, issue
# 15). (256, 256) without weight norm elsewhere: on Hopper the paper's models learnt faster
# early and ended level; on Ant, with HalfCheetah's patience stop as well, 339 +- 26 against
# 388 +- 86 at 200k real steps (seeds 0-2), cheaper but predicting fresh data worse.
_CPU_MODELS = {"halfcheetah": ((512, 512), True)}
# The cpu preset's initial policy on the Ant: (init_std, output_scale). rllab's Glorot output
# layer gives mean actions of |0.6| that make brax's ant jump out of its healthy height range
# within 30 steps whatever the noise; with the last layer x 0.01 and std 0.5 its episodes
# last twice as long (WORKSPACE.md, issue 14: docs/probes/ant_initial_policy.py).
_CPU_POLICY_INIT = {"ant": (0.5, 0.01)}
# The cpu preset's inner step size (alpha) where a smaller one was measured better. On
# HalfCheetah with the preset's models, the mean return of the last five iterations to 100k
# rose as alpha fell on each of seeds 0, 1, 2 (alpha = 1e-3 / 1e-4 / 0: 761 / 777 / 791,
# 315 / 406 / 511, 318 / 502 / 562): the vanilla policy-gradient step is not invariant to
# the policy's std, so at a fixed alpha its KL grows about 2.5x per nat of entropy lost and
# reached 0.1-0.95 (10-95x the outer step's trust region) late in the paper-alpha runs.
# 1e-4 keeps an adaptation step (MB-MPO, not the alpha = 0 ablation) (WORKSPACE.md, issue 15).
# Not on Hopper: 1e-4 there ended 580 +- 119 against 677 +- 9 at 100k (seeds 0-2; one stalled).
_CPU_INNER_LR = {"halfcheetah": 1e-4}
# The cpu preset's outer (TRPO) steps per iteration: 20 to keep the meta phase cheap, the
# paper's 30 on Hopper, where they were measured better: at 100k real steps 691 / 697 / 526
# on seeds 0, 1, 2 against 676 / 659 / 399 with 20 (the stalled seed 2 +127, its episodes 167
# steps against 136), at about 1.5x the meta phase's cost. On HalfCheetah 30 were measured
# worse (451 +- 171 against 548 +- 115 at 100k, lower on every seed: the policy's entropy
# collapses faster), and 10 worse on the two poor seeds too (95 / 505 against 425 / 518: the
# entropy stays high, the return does not follow) (WORKSPACE.md, issue 15).
_CPU_META_STEPS = {"hopper": 30}
# The cpu preset's TRPO curvature products on every n-th imagined rollout (`meta.fvp_subsample`;
# the paper's 1 elsewhere). On Hopper, where 200-step imagination makes them most of the meta
# phase, n = 4 took the meta phase 3.2x faster (a run to 100k real steps in 29 min on one
# core) and ended higher: 668 / 689 / 676 on seeds 0, 1, 2 against 691 / 697 / 526, no seed
# stalled (seed 3: 648) on an AMX Xeon; on a Zen 4 EPYC 733 / 640 / 219, seed 2 stalled. On
# HalfCheetah it ended lower on seeds 0, 1, 2 (492 +- 128 against 548 +- 115; level over
# seeds 0-3) for a run only about 20% faster (the fit dominates there),
# so not there; on Walker2d level at 200k (463 +- 38 against 473 +- 68) and lower at 100k on
# every seed, so not there either. On Swimmer it ended higher on every seed (seeds 0, 1, 2
# escaped the 40-45 gait the full products settled in; the first meta phase narrows the
# policy less: entropy 2.84 -> 2.60 against 2.37) with the meta phase 2.5x faster. On Ant one
# seed was behind the preset's at every step count (373 against 497 at 200k)
# (WORKSPACE.md, issue 15).
_CPU_FVP_SUBSAMPLE = {"hopper": 4, "swimmer": 4}
# The cpu preset's entropy bonus on the outer objective (`meta.entropy_coeff`, beta x the
# adapted policies' mean entropy; the paper's objective has none). On Hopper the policy's
# first gait can be a dive that falls at about 100 steps, which the models then predict
# correctly and the outer steps narrow the policy onto (2 of 18 seeds on a Zen 4 EPYC); with
# beta = 0.003 the entropy falls more slowly on every seed. Chosen on seed 2 (685 against 219
# at 100k real steps), then decided on seeds not seen before, 10, 11, 12 on the same machine:
# 705 / 670 / 693 = 689 +- 15 against 655 / 692 / 493 = 613 +- 86 (seed 12 without it in a
# 156-step gait); over the seven seeds run both ways 661 +- 89 against 535 +- 185. 0.01 and
# above let the std grow without bound (noise beyond the clipped action's bounds costs
# nothing). On HalfCheetah level (420 +- 141 against 411 +- 210 over seeds 0-3), so not there;
# not measured on the other tasks (WORKSPACE.md, issue 15).
_CPU_ENTROPY_COEFF = {"hopper": 0.003}
# The cpu preset's GAE lambda (`meta.gae_lambda`; the paper's 1.0, the return minus the
# linear baseline). On HalfCheetah 0.95 (brax PPO's value) was measured higher on a Zen 4
# EPYC: at 100k real steps 452 +- 193 against 367 +- 187 over seeds 0-5, higher on five of
# the six (by the last five iterations 451 against 348), 476 +- 233 against 445 +- 234 on
# seeds 0-2; the two seeds new to that machine, 4 and 5, 242 and 573 against 216 and 342.
# The outer steps narrow the policy faster (mean entropy 2.7 against 4.3 at 20k), and seed
# 1's imagined return, 2.3x its real one with 1.0, stays within 1.2x of it. Not measured on
# the other tasks (WORKSPACE.md, issue 15).
_CPU_GAE_LAMBDA = {"halfcheetah": 0.95}


def steps_per_iteration(cfg: ml_collections.ConfigDict) -> int:
    """Real steps collected per iteration: `steps_per_iteration`, or T x horizon if 0.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    if cfg.steps_per_iteration > 0:
        return int(cfg.steps_per_iteration)
    return int(cfg.meta.meta_batch_size * cfg.horizon)


def iterations_of(cfg: ml_collections.ConfigDict) -> int:
    """Iterations of a run: `num_iterations` if > 0, else enough to reach `total_steps`.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    if cfg.num_iterations > 0:
        return int(cfg.num_iterations)
    remaining = max(cfg.total_steps - cfg.initial_random_steps, 0)
    return max(-(-remaining // steps_per_iteration(cfg)), 1)


def get_config(env: str = "halfcheetah", preset: str = "paper") -> ml_collections.ConfigDict:
    """The configuration of `preset` for task `env` (ConfigError if either is unknown).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    if env not in TASKS:
        raise ConfigError(f"unknown env {env!r}; valid: {', '.join(TASKS)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    c = _paper(env)
    c.preset = preset
    if preset == "cpu":
        c.total_steps = _CPU_TOTAL_STEPS.get(env, 200_000)
        c.initial_random_steps = 4000
        c.num_eval_rollouts = 10
        c.ensemble.hidden, c.ensemble.weight_norm = _CPU_MODELS.get(env, ((256, 256), False))
        c.ensemble.max_epochs = 50
        # The CPU's matrix units: returns within the seed spread on HalfCheetah and Hopper,
        # the fit 1.7x faster (WORKSPACE.md, issue 18).
        c.ensemble.compute_dtype = "bfloat16"
        c.ensemble.patience = _CPU_PATIENCE.get(env, 0)
        c.meta.meta_batch_size = 10
        c.meta.rollouts_per_task = 20
        c.meta.horizon = _CPU_IMAGINED_HORIZON.get(env, 200)
        c.policy.init_std, c.policy.output_scale = _CPU_POLICY_INIT.get(env, (1.0, 1.0))
        c.meta.inner_lr = _CPU_INNER_LR.get(env, c.meta.inner_lr)
        c.meta.num_meta_steps = _CPU_META_STEPS.get(env, 20)
        c.meta.fvp_subsample = _CPU_FVP_SUBSAMPLE.get(env, 1)
        c.meta.entropy_coeff = _CPU_ENTROPY_COEFF.get(env, 0.0)
        c.meta.gae_lambda = _CPU_GAE_LAMBDA.get(env, c.meta.gae_lambda)
        # The imagined reward of the action the model steps with (the real environment's),
        # not the paper's sampled one: on the preset's HalfCheetah the sampled one's control
        # cost collapsed the policy's entropy (seeds 0-2 846, 363, 299 against 703, 425, 518
        # at 100k real steps, lower by the last five rows on each; WORKSPACE.md, issue 15).
        # Every cpu-preset run used it.
        c.meta.reward_action = "clipped"
    elif preset == "smoke":
        c.horizon = 50
        c.initial_random_steps = 400
        c.total_steps = 800  # the warm-up + 2 iterations of 4 x 50 real steps
        c.num_eval_rollouts = 2
        c.checkpoint_keep = 2
        c.ensemble.num_models = 2
        c.ensemble.hidden = (32, 32)
        c.ensemble.weight_norm = False
        c.ensemble.batch_size = 64
        c.ensemble.max_epochs = 5
        c.ensemble.buffer_size = 5000
        c.policy.hidden = (16, 16)
        c.meta.meta_batch_size = 4
        c.meta.rollouts_per_task = 4
        c.meta.horizon = 20
        c.meta.num_meta_steps = 2
        c.meta.cg_iters = 3
        c.meta.max_backtracks = 5
        c.meta.ppo_epochs = 2
    return c


def _parse_int(text: str) -> int:
    """`100000`, `100_000` or a whole number in float notation (`1e5`, `2.5e4`)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # ValueError for what is no number at all
        if not value.is_integer():
            raise ValueError from None
        return int(value)


def _parse_value(text: str, current: Any, path: str) -> Any:
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(current, int):
            return _parse_int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            kind = type(current[0]) if current else int
            return tuple(kind(p) for p in parts)
        return text
    except ValueError:
        raise ConfigError(f"--config.{path}={text!r}: expected {type(current).__name__}") from None


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Applies `["a.b=value", ...]` in place, typed like the current value.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--config.{item}: expected --config.FIELD=VALUE")
        path, text = item.split("=", 1)
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            if k not in node or not isinstance(node[k], ml_collections.ConfigDict):
                raise ConfigError(f"--config.{path}: unknown config field")
            node = node[k]
        if keys[-1] not in node or isinstance(node[keys[-1]], ml_collections.ConfigDict):
            raise ConfigError(f"--config.{path}: unknown config field")
        node[keys[-1]] = _parse_value(text, node[keys[-1]], path)


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line) on the first bad value.

    Transforms: host-side Python (not for jit/vmap/grad).
    """

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(cfg.env in TASKS, f"env: unknown {cfg.env!r}; valid: {', '.join(TASKS)}")
    need(
        isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**31,
        f"seed must be in [0, 2**31), got {cfg.seed}",
    )
    for path, value in leaves(cfg):
        if isinstance(value, float):
            need(math.isfinite(value), f"{path} must be finite, got {value}")
    positive = {
        "horizon": cfg.horizon,
        "total_steps": cfg.total_steps,
        "num_eval_rollouts": cfg.num_eval_rollouts,
        "checkpoint_keep": cfg.checkpoint_keep,
        "ensemble.num_models": cfg.ensemble.num_models,
        "ensemble.batch_size": cfg.ensemble.batch_size,
        "ensemble.max_epochs": cfg.ensemble.max_epochs,
        "ensemble.buffer_size": cfg.ensemble.buffer_size,
        "ensemble.learning_rate": cfg.ensemble.learning_rate,
        "ensemble.obs_clip": cfg.ensemble.obs_clip,
        "policy.init_std": cfg.policy.init_std,
        "policy.output_scale": cfg.policy.output_scale,
        "meta.meta_batch_size": cfg.meta.meta_batch_size,
        "meta.rollouts_per_task": cfg.meta.rollouts_per_task,
        "meta.horizon": cfg.meta.horizon,
        "meta.num_meta_steps": cfg.meta.num_meta_steps,
        "meta.num_inner_steps": cfg.meta.num_inner_steps,
        "meta.max_kl": cfg.meta.max_kl,
        "meta.cg_iters": cfg.meta.cg_iters,
        "meta.max_backtracks": cfg.meta.max_backtracks,
        "meta.fvp_subsample": cfg.meta.fvp_subsample,
        "meta.ppo_lr": cfg.meta.ppo_lr,
        "meta.ppo_epochs": cfg.meta.ppo_epochs,
    }
    for name, value in positive.items():
        need(value > 0, f"{name} must be positive, got {value}")
    need(cfg.initial_random_steps >= 0, "initial_random_steps must be >= 0")
    need(cfg.num_iterations >= 0, "num_iterations must be >= 0 (0: derived from total_steps)")
    need(
        cfg.steps_per_iteration >= 0,
        "steps_per_iteration must be >= 0 (0: meta_batch_size x horizon)",
    )
    for name, sizes in (
        ("ensemble.hidden", cfg.ensemble.hidden),
        ("policy.hidden", cfg.policy.hidden),
    ):
        need(
            len(sizes) > 0 and all(s > 0 for s in sizes),
            f"{name} sizes must be positive, got {sizes}",
        )
    need(cfg.meta.inner_lr >= 0, f"meta.inner_lr must be >= 0, got {cfg.meta.inner_lr}")
    need(
        cfg.meta.entropy_coeff >= 0,
        f"meta.entropy_coeff must be >= 0, got {cfg.meta.entropy_coeff}",
    )
    need(cfg.meta.cg_damping >= 0, "meta.cg_damping must be >= 0")
    need(0 < cfg.meta.backtrack_ratio < 1, "meta.backtrack_ratio must be in (0, 1)")
    need(0 < cfg.meta.discount <= 1, "meta.discount must be in (0, 1]")
    need(0 <= cfg.meta.gae_lambda <= 1, "meta.gae_lambda must be in [0, 1]")
    need(0 < cfg.ensemble.valid_split < 1, "ensemble.valid_split must be in (0, 1)")
    need(0 < cfg.ensemble.persistency < 1, "ensemble.persistency must be in (0, 1)")
    need(cfg.meta.ppo_clip > 0, "meta.ppo_clip must be positive")
    need(
        cfg.meta.outer in ("trpo", "ppo"), f"meta.outer must be trpo or ppo, got {cfg.meta.outer!r}"
    )
    need(
        cfg.meta.inner_update in INNER_UPDATES,
        f"meta.inner_update must be {' or '.join(INNER_UPDATES)}, got {cfg.meta.inner_update!r}",
    )
    need(
        cfg.executor in EXECUTORS,
        f"executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}",
    )
    need(
        cfg.meta.start_from in ("reset", "buffer"),
        f"meta.start_from must be reset or buffer, got {cfg.meta.start_from!r}",
    )
    need(
        cfg.ensemble.compute_dtype in COMPUTE_DTYPES,
        f"ensemble.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
        f"got {cfg.ensemble.compute_dtype!r}",
    )
    need(
        cfg.ensemble.activation in ACTIVATIONS,
        f"ensemble.activation: unknown {cfg.ensemble.activation!r}; "
        f"valid: {', '.join(ACTIVATIONS)}",
    )
    t, k = cfg.meta.meta_batch_size, cfg.ensemble.num_models
    need(
        t % k == 0,
        f"meta.meta_batch_size ({t}) must be a multiple of ensemble.num_models ({k})",
    )
    need(
        cfg.ensemble.buffer_size >= 10,
        f"ensemble.buffer_size must be at least 10, got {cfg.ensemble.buffer_size}",
    )
    ensemble_config(cfg)  # the dataclasses' own checks, as one-line ConfigErrors
    meta_config(cfg)


def leaves(node: ml_collections.ConfigDict, prefix: str = ""):
    """``(dotted path, value)`` of every field of a config, sections walked in order.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def to_json(cfg: ml_collections.ConfigDict) -> str:
    """The config as stable, sorted JSON (tuples become lists).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


# Fields added after runs were written, with the value that reproduces what the code did
# before they existed. A config.json without one of them (a run begun before the field)
# gets this value, not the preset's current default, so that resuming it stays the run.
_BEFORE_FIELD = {
    ("ensemble", "compute_dtype"): "float32",
    ("ensemble", "patience"): 0,
    ("meta", "reward_action"): "clipped",
    ("meta", "fvp_subsample"): 1,
    ("meta", "entropy_coeff"): 0.0,
    ("policy", "normalize_obs"): False,
    ("ensemble", "recent_rows"): 0,
    ("ensemble", "recent_weight"): 1.0,
}


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of `to_json` (lists back to tuples where the defaults have tuples).

    A field missing from ``text`` takes the preset's value, except the fields added since
    runs were first written, which take the value that reproduces the older code.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config.json: not JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("env"), str):
        raise ConfigError("config.json: expected an object with an 'env' name")
    cfg = get_config(raw["env"], str(raw.get("preset", "paper")))

    def fill(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
        for key, value in values.items():
            if key not in node:
                raise ConfigError(f"config.json: unknown field {prefix}{key}")
            current = node[key]
            if isinstance(current, ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise ConfigError(f"config.json: {prefix}{key} must be a section")
                fill(current, value, f"{prefix}{key}.")
                continue
            if isinstance(current, tuple):
                if not isinstance(value, list):
                    raise ConfigError(f"config.json: {prefix}{key} must be a list")
                value = tuple(value)
            elif isinstance(current, bool) or isinstance(value, bool):
                if type(value) is not type(current):
                    raise ConfigError(f"config.json: {prefix}{key} must be a bool")
            elif isinstance(current, int | float) and not isinstance(value, int | float):
                raise ConfigError(f"config.json: {prefix}{key} must be a number")
            elif isinstance(current, str) and not isinstance(value, str):
                raise ConfigError(f"config.json: {prefix}{key} must be a string")
            try:
                node[key] = value
            except (TypeError, ValueError) as e:
                raise ConfigError(f"config.json: {prefix}{key}: {e}") from None

    for (section, key), before in _BEFORE_FIELD.items():
        given = raw.get(section)
        if not isinstance(given, dict) or key not in given:
            cfg[section][key] = before
    fill(cfg, raw, "")
    return cfg
