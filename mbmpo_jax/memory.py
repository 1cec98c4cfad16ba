"""How much memory a run configuration needs, checked before anything starts.

Host-side Python over a run config (``config.get_config``); no JAX.
"""

from __future__ import annotations

import os

import ml_collections

from mbmpo_jax.config import ConfigError, steps_per_iteration
from mbmpo_jax.envs.tasks import TASKS

__all__ = ["check_memory", "estimate_memory"]

_F32 = 4  # bytes


def estimate_memory(cfg: ml_collections.ConfigDict) -> dict[str, int]:
    """Bytes the run's largest arrays need, per phase, from the config alone (no JAX).

    A deliberately generous upper estimate (about 2-3x what the paper's configuration
    measures), meant to refuse configurations that cannot fit (a 15 TB imagination, a
    1e10-row buffer), not to budget tight ones:
      buffer: the FIFO's three arrays, plus the fit's normalised and shuffled copies;
      ensemble: K models' params, gradients and Adam moments, and one minibatch's
        activations through forward and backward;
      imagination: every imagined sample of a meta step (pre and post phases) with the
        residuals the inner step, the meta-gradient and TRPO's curvature keep per sample;
      real_data: the collection's and the evaluation's [N, S] arrays.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    task = TASKS[cfg.env]
    o, a = task.obs_dim, task.act_dim
    k = cfg.ensemble.num_models
    sizes = [o + a, *cfg.ensemble.hidden, o]
    model_params = sum(i * j + j for i, j in zip(sizes[:-1], sizes[1:], strict=False))
    transition = 2 * o + a
    buffer = cfg.ensemble.buffer_size * transition * _F32 * (1 + 3)
    ensemble = k * model_params * _F32 * 4 + (
        k * cfg.ensemble.batch_size * sum(cfg.ensemble.hidden) * _F32 * 4
    )
    m = cfg.meta
    samples = m.meta_batch_size * m.rollouts_per_task * m.horizon
    per_sample = o + a + 8 + 4 * sum(cfg.policy.hidden)
    imagination = samples * (m.num_inner_steps + 1) * per_sample * _F32 * 3
    budget = steps_per_iteration(cfg)
    per_env = -(-max(budget, cfg.initial_random_steps) // m.meta_batch_size)
    real_data = (
        (m.meta_batch_size * per_env + cfg.num_eval_rollouts * cfg.horizon)
        * (transition + 4)
        * _F32
        * 2
    )
    return {
        "buffer": int(buffer),
        "ensemble": int(ensemble),
        "imagination": int(imagination),
        "real_data": int(real_data),
    }


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: ml_collections.ConfigDict, available: int | None = None) -> dict[str, int]:
    """Raises ConfigError (one line) if `estimate_memory(cfg)` exceeds `available` bytes
    (default: this machine's available memory); returns the estimate.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    est = estimate_memory(cfg)
    if available is None:
        available = _available_memory()
    total = sum(est.values())
    if available is not None and total > available:
        gib = lambda b: f"{b / 2**30:,.1f} GiB"
        parts = ", ".join(f"{k} {gib(v)}" for k, v in sorted(est.items(), key=lambda kv: -kv[1]))
        raise ConfigError(
            f"this configuration needs about {gib(total)} ({parts}); "
            f"the machine has {gib(available)} available: reduce the largest"
        )
    return est
