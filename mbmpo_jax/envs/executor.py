"""The real-data executor contract: what the Trainer asks of whatever steps the real world.

Two implementations honour it: `native.NativeExecutor` (MuJoCo's C library on the host,
the default: fastest on a CPU) and `mjx_env.MjxExecutor` (MuJoCo XLA: the whole
collection is one jitted program, for accelerators). `mbmpo.Trainer(cfg, executor=...)`
takes either factory, or any other `(task, num_envs) -> Executor`.

The contract, for an executor of N environments of `task`:

* `rollout(act_fn, params, key, horizon=None) -> RealBatch` runs N episodes of at most
  `horizon` (default `task.horizon`) steps from fresh resets; an episode that terminates is
  frozen: `mask[i, t]` is True up to and including its terminating transition, and False
  after it, where `reward` is 0 and `done` False (the other fields there are padding).
* `collect(act_fn, params, key, num_steps, horizon=None) -> Collection` takes exactly
  `num_steps` real steps, time-major over the N environments (each takes
  `ceil(num_steps / N)` steps or one fewer; `mask` marks the steps taken), and restarts an
  environment from the reset distribution when its episode terminates or reaches `horizon`
  (`first` marks the first step of every episode); `episode_returns`/`episode_lengths` are
  those of the episodes that ended inside the collection.
* `act_fn(params, key, obs [N, O]) -> act [N, A]` is pure JAX (a module-level or cached
  function, so compiled programs are reused); environment i takes row i of its output, so
  per-environment policies (`mbmpo.act_per_env`) keep environment i on policy i.
  Actions are clipped to the task's bounds before they reach the physics and are stored
  clipped (`act`), beside the policy's sample itself (`sampled_act`); a non-finite action
  raises `ValueError`.
* Resets are `task.init_state(k, (N,))` and the keys are used the same way by both
  executors: with the same `key` and `act_fn`, they start from the same states and draw the
  same action noise, and differ only by the physics' rounding (MJX computes in float32
  unless x64 is enabled; see `tests/test_executors.py`).
* Results are host numpy arrays (`RealBatch` leaves `[N, H]` / `[N, S]`); repeated calls
  with the same shapes compile nothing new.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from mbmpo_jax.envs.native import ActFn, Collection, RealBatch
from mbmpo_jax.envs.tasks import TaskSpec

__all__ = ["Executor", "ExecutorFactory"]


class Executor(Protocol):
    """N environments of one task that produce real data (the contract above)."""

    task: TaskSpec
    num_envs: int

    def rollout(
        self, act_fn: ActFn, params: Any, key: jax.Array, horizon: int | None = None
    ) -> RealBatch: ...

    def collect(
        self,
        act_fn: ActFn,
        params: Any,
        key: jax.Array,
        num_steps: int,
        horizon: int | None = None,
    ) -> Collection: ...


class ExecutorFactory(Protocol):
    """`(task, num_envs) -> Executor`: what `mbmpo.Trainer(executor=...)` takes; the
    executor classes themselves (`native.NativeExecutor`, `mjx_env.MjxExecutor`) are ones."""

    def __call__(self, task: TaskSpec, num_envs: int) -> Executor: ...
