"""Multi-device execution: the tasks axis sharded over a `Mesh` of local devices.

One code path: the meta step constrains every `[T, ...]` array (per-task policy params,
imagined rollouts, advantages) to be split along its leading axis over the mesh's
`tasks` axis, and XLA's SPMD partitioner splits imagination, the inner steps and the
per-task losses across devices; means over tasks become all-reduces. A single device is
the mesh of one (the constraints are then no-ops).

Multi-host: call `jax.distributed.initialize()` first on every host; `jax.devices()` then
lists all hosts' devices and `task_mesh(T)` spans them (see WORKSPACE.md); `jit_on_mesh`
then returns the meta phase's outputs replicated, so that every process holds all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["TASK_AXIS", "jit_on_mesh", "processes_in", "shard_tasks", "task_mesh"]

TASK_AXIS = "tasks"


def task_mesh(num_tasks: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over the largest number of `devices` that divides `num_tasks`.

    Args:
      num_tasks: T, the meta batch size (each device gets T / D tasks).
      devices: default all devices (`jax.devices()`).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    devices = list(jax.devices() if devices is None else devices)
    d = max(k for k in range(1, len(devices) + 1) if num_tasks % k == 0)
    return Mesh(np.asarray(devices[:d]), (TASK_AXIS,))


def shard_tasks(tree: Any, mesh: Mesh | None) -> Any:
    """Constrains every array leaf `[T, ...]` of `tree` to be split on its leading axis.

    Use inside `jit`. Scalars are left alone; `mesh=None` returns `tree` unchanged.
    """
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, PartitionSpec(TASK_AXIS))

    def constrain(x):
        if not hasattr(x, "ndim") or x.ndim == 0:
            return x
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree.map(constrain, tree)


def jit_on_mesh(fn: Any, mesh: Mesh) -> Any:
    """`jax.jit(fn)`; for a mesh over several processes, with every output replicated.

    A process can read only the shards on its own devices, and each process needs every
    task's adapted policy (it collects with all of them) and the diagnostics (its metrics
    row): so across processes the outputs end in an all-gather. Within one process the
    outputs keep the shardings XLA chose (tasks stay split; reading them gathers).

    Transforms: host-side Python (wraps `fn` in `jit`).
    """
    if processes_in(mesh) == 1:
        return jax.jit(fn)
    return jax.jit(fn, out_shardings=NamedSharding(mesh, PartitionSpec()))


def processes_in(mesh: Mesh) -> int:
    """How many processes own a device of `mesh`.

    Transforms: host-side Python (reads the mesh's devices; not for jit/vmap/grad).
    """
    return len({d.process_index for d in mesh.devices.flat})
