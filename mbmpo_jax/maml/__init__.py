"""MAML on the learned models: the inner step, the one meta-objective, the outer steps.

Modules, by job (each name below is also importable from ``mbmpo_jax.maml``):

  objective    ``PolicyBatch``, ``inner_grad`` / ``inner_step`` / ``adapt`` (the inner
               step: the paper's PG or the std-invariant variant),
               ``meta_objective`` (what the outer steps optimise), the surrogates, and
               the KLs (``task_kl``, ``pooled_kl``)
  curvature    ``meta_kl_hvp``: TRPO's KL Hessian-vector products through the inner step
  outer        ``trpo_outer_step`` (the paper), ``ppo_outer_step`` (RLlib's port); both
               take the meta-objective as a closure
  diagnostics  ``std_kl_diagnostic``: the ensemble's disagreement against KL(pre || post)
  meta_step    ``MetaConfig``, ``MetaState``, ``make_meta_step`` (imagine -> inner step
               -> imagine -> outer step), ``make_meta_train`` (N steps in one scan)
"""

from mbmpo_jax.maml.curvature import meta_kl_hvp
from mbmpo_jax.maml.diagnostics import disagreement, std_kl_diagnostic, weighted_pearson
from mbmpo_jax.maml.meta_step import (
    MetaConfig,
    MetaDiagnostics,
    MetaState,
    init_meta_state,
    make_meta_step,
    make_meta_train,
)
from mbmpo_jax.maml.objective import (
    INNER_UPDATES,
    PolicyBatch,
    adapt,
    broadcast_tasks,
    inner_grad,
    inner_step,
    likelihood_ratio,
    lr_surrogate,
    masked_mean,
    meta_objective,
    pg_surrogate,
    pooled_kl,
    task_kl,
)
from mbmpo_jax.maml.outer import OuterInfo, ppo_outer_step, trpo_outer_step

__all__ = [
    "INNER_UPDATES",
    "MetaConfig",
    "MetaDiagnostics",
    "MetaState",
    "OuterInfo",
    "PolicyBatch",
    "adapt",
    "broadcast_tasks",
    "disagreement",
    "init_meta_state",
    "inner_grad",
    "inner_step",
    "likelihood_ratio",
    "lr_surrogate",
    "make_meta_step",
    "make_meta_train",
    "masked_mean",
    "meta_kl_hvp",
    "meta_objective",
    "pg_surrogate",
    "pooled_kl",
    "ppo_outer_step",
    "std_kl_diagnostic",
    "task_kl",
    "trpo_outer_step",
    "weighted_pearson",
]
