"""mbmpo_jax: Model-Based Meta-Policy Optimization (Clavera et al., CoRL 2018) in JAX.

The public API, in the order data flows through one MB-MPO iteration:

  tasks       `get_task`, `TaskSpec`, `TASKS`: model, reset, obs/reward/done functions
  executors   `NativeEnv`, `rollout` (native MuJoCo), `RealBatch`; the MJX executor is
              `mbmpo_jax.envs.mjx_env.MjxEnv` (imported on demand: it loads brax)
  buffer      `buffer.init / add / add_prefix / valid_data`: fixed-capacity FIFO
  ensemble    `dynamics.init / fit / predict / model_params / model_step`, `EnsembleConfig`
  policy      `policy.init / apply / sample / log_prob / kl / entropy`
  imagination `imagine.imagine`: T tasks x R rollouts x H steps in the K models
  returns     `returns.gae / fit_linear_baseline / compute_advantages`
  MAML        `maml.adapt` (inner step), `maml.meta_objective`, `maml.make_meta_step`,
              `maml.make_meta_train`, `MetaConfig`, `MetaState`
  outer step  `optim.trpo` (conjugate gradient, line search), `optim.ppo`
  iteration   `Trainer`, `TrainState`; configs: `config.get_config`

Everything is a pure function over explicit state unless its docstring says otherwise
(the native executor steps MuJoCo on the host).
"""

from mbmpo_jax import buffer, config, dynamics, imagine, maml, policy, returns
from mbmpo_jax.dynamics import EnsembleConfig, EnsembleState
from mbmpo_jax.envs.native import NativeEnv, RealBatch, rollout
from mbmpo_jax.envs.tasks import TASKS, TaskSpec, get_task
from mbmpo_jax.maml import MetaConfig, MetaState, make_meta_step, make_meta_train
from mbmpo_jax.mbmpo import Trainer, TrainState
from mbmpo_jax.optim import ppo, trpo

__version__ = "0.1.0"

__all__ = [
    "TASKS",
    "EnsembleConfig",
    "EnsembleState",
    "MetaConfig",
    "MetaState",
    "NativeEnv",
    "RealBatch",
    "TaskSpec",
    "TrainState",
    "Trainer",
    "buffer",
    "config",
    "dynamics",
    "get_task",
    "imagine",
    "maml",
    "make_meta_step",
    "make_meta_train",
    "policy",
    "ppo",
    "returns",
    "rollout",
    "trpo",
]
