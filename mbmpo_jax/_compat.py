"""Definitions that third-party code still calls but newer JAX releases removed.

brax 0.14.2's `ppo.train` (the model-free baseline, `experiments/baseline.py`) replicates
its training state with `jax.device_put_replicated`, which jax 0.10 removed. brax's main
branch replaced the call (upstream commit 303d89d, "In-line definitions of
`jax.device_put_sharded` and `jax.device_put_replicated`"), but no brax release after
0.14.2 carries it yet. Delete this module, and its call in `experiments/baseline.py`, once
`setup.cfg` can require a brax release that contains 303d89d.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["device_put_replicated", "install_device_put_replicated"]


def device_put_replicated(x: Any, devices: Sequence[jax.Device]) -> Any:
    """`x` broadcast along a new leading axis of size `len(devices)`, slice i on `devices[i]`.

    The contract of the removed `jax.device_put_replicated`, through public APIs only: each
    leaf `[...]` becomes `[len(devices), ...]`, placed with a `NamedSharding` that splits the
    new axis over a 1-D mesh of `devices` (what `jax.pmap` expects of its inputs).

    Transforms: host-side (places data on devices; not for jit/vmap/grad).
    """
    if not isinstance(devices, Sequence) or not devices:
        raise ValueError("device_put_replicated: `devices` must be a non-empty sequence")
    n = len(devices)
    sharding = NamedSharding(Mesh(np.asarray(devices), ("replicas",)), PartitionSpec("replicas"))

    def put(leaf):
        # A numpy view costs nothing; a device array is broadcast where it already lives.
        if isinstance(leaf, jax.Array):
            stacked = jnp.broadcast_to(leaf[None], (n, *leaf.shape))
        else:
            leaf = np.asarray(leaf)
            stacked = np.broadcast_to(leaf[None], (n, *leaf.shape))
        return jax.device_put(stacked, sharding)

    return jax.tree_util.tree_map(put, x)


def install_device_put_replicated() -> bool:
    """Defines `jax.device_put_replicated` as the function above if this jax lacks it.

    Returns whether it did (False on jax < 0.10, whose own definition is kept).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jax 0.9 warns on the lookup
        if hasattr(jax, "device_put_replicated"):
            return False
    setattr(jax, "device_put_replicated", device_put_replicated)  # noqa: B010
    return True
