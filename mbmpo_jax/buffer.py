"""Fixed-capacity FIFO buffer of real transitions (obs, act, next_obs).

The arrays always have shape ``[capacity, ...]``; how much of them holds data is the
traced scalar ``count``. Rows ``[0, count)`` are valid: the write pointer equals
``count`` until the buffer is full, after which every row is valid and ``ptr`` is the
oldest row. Because no shape depends on how much data has arrived, every jitted
consumer (``add``, the dynamics fit) compiles once for the whole run.

Typical use::

    buf = buffer.init(100_000, obs_dim, act_dim)
    buf = buffer.add(buf, obs, act, next_obs)  # [B, O], [B, A], [B, O]
    buffer.check_finite(buf.obs, buf.act, buf.next_obs, count=buf.count)

Dtypes: the arrays are float32 unless ``init`` is given another ``dtype`` (float64 needs
``jax_enable_x64``); ``add`` casts incoming data to the buffer's dtype. Counters are int32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "Buffer",
    "DEFAULT_CAPACITY",
    "add",
    "add_prefix",
    "ages",
    "check_finite",
    "init",
    "size",
    "valid_data",
    "valid_mask",
]

DEFAULT_CAPACITY = 100_000  # the paper keeps the last 100k real transitions


@struct.dataclass
class Buffer:
    """FIFO state. ``capacity`` is ``obs.shape[0]`` (static).

    Attributes:
      obs: ``[C, O]`` observations (float32 by default, see ``init``).
      act: ``[C, A]`` actions (as applied by the simulator), same dtype.
      next_obs: ``[C, O]`` next observations, same dtype.
      count: ``[]`` int32, number of valid rows, ``<= C``.
      ptr: ``[]`` int32, next row to write (the oldest row once full).
    """

    obs: jax.Array
    act: jax.Array
    next_obs: jax.Array
    count: jax.Array
    ptr: jax.Array

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


def init(
    capacity: int, obs_dim: int, act_dim: int, dtype: jax.typing.DTypeLike = jnp.float32
) -> Buffer:
    """An empty buffer with zero-filled ``[capacity, ...]`` arrays of ``dtype``.

    ``capacity`` is static (it sets array shapes); ``DEFAULT_CAPACITY`` is the paper's.
    ``dtype`` is float32 by default; float64 needs ``jax_enable_x64``.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    if capacity < 1:
        raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
    return Buffer(
        obs=jnp.zeros((capacity, obs_dim), dtype),
        act=jnp.zeros((capacity, act_dim), dtype),
        next_obs=jnp.zeros((capacity, obs_dim), dtype),
        count=jnp.zeros((), jnp.int32),
        ptr=jnp.zeros((), jnp.int32),
    )


@jax.jit
def add(buf: Buffer, obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> Buffer:
    """Append a batch, overwriting the oldest rows when full.

    Args:
      buf: buffer with capacity ``C``.
      obs: ``[B, O]``; act: ``[B, A]``; next_obs: ``[B, O]``. ``B`` is static (one
        compilation per batch size) and may exceed the free space or even ``C``, in
        which case only the last ``C`` rows of the batch are kept.

    Returns:
      The new buffer. Pure and jittable; not differentiable w.r.t. ``count``/``ptr``.
    """
    batch = obs.shape[0]
    if not (act.shape[0] == next_obs.shape[0] == batch):
        raise ValueError(
            f"add: batch sizes differ: obs {obs.shape}, act {act.shape}, next_obs {next_obs.shape}"
        )
    # The whole batch is a prefix of itself; add_prefix keeps the last C rows if B > C.
    return add_prefix(buf, obs, act, next_obs, jnp.asarray(batch, jnp.int32))


@jax.jit
def add_prefix(
    buf: Buffer, obs: jax.Array, act: jax.Array, next_obs: jax.Array, n: jax.Array
) -> Buffer:
    """Append the first ``n`` rows of a fixed-size batch (``n`` traced: no recompiles).

    Real rollouts end early at ``done``, so the number of transitions varies from one
    collection to the next; padding them to one shape ``[M, ...]`` and passing the count
    keeps a single compilation for the whole run.

    Args:
      buf: buffer with capacity ``C``.
      obs: ``[M, O]``; act: ``[M, A]``; next_obs: ``[M, O]``; rows ``>= n`` are ignored.
      n: ``[]`` int, ``0 <= n <= M``. If ``n > C`` only the last ``C`` of the ``n`` rows
        are kept.

    Returns:
      The new buffer. Pure and jittable.
    """
    capacity = buf.capacity
    m = obs.shape[0]
    n = jnp.asarray(n, jnp.int32)
    i = jnp.arange(m, dtype=jnp.int32)
    # Row i of the batch lands at (ptr + i) % C; of the n valid rows only the last C
    # survive, and padding rows are sent out of bounds so the scatter drops them.
    keep = (i < n) & (i >= n - capacity)
    rows = jnp.where(keep, (buf.ptr + i) % capacity, capacity)

    def write(dst: jax.Array, src: jax.Array) -> jax.Array:
        return dst.at[rows].set(src.astype(dst.dtype), mode="drop")

    return Buffer(
        obs=write(buf.obs, obs),
        act=write(buf.act, act),
        next_obs=write(buf.next_obs, next_obs),
        count=jnp.minimum(buf.count + n, capacity).astype(jnp.int32),
        ptr=((buf.ptr + n) % capacity).astype(jnp.int32),
    )


def size(buf: Buffer) -> jax.Array:
    """Number of valid transitions, ``[]`` int32 (traced; jit-safe)."""
    return buf.count


def valid_mask(buf: Buffer) -> jax.Array:
    """``[C]`` bool, True on rows holding data (always the first ``count`` rows).

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    return jnp.arange(buf.capacity) < buf.count


def ages(buf: Buffer) -> jax.Array:
    """``[C]`` int32: how many transitions were added after each row (0: the newest).

    Rows not holding data get ``C``. The newest row is ``ptr - 1`` (mod ``C``) whether or
    not the buffer is full (before it is, ``ptr == count``).

    Transforms: safe under jit (sizes are static); integer outputs, nothing to differentiate.
    """
    capacity = buf.capacity
    age = (buf.ptr - 1 - jnp.arange(capacity, dtype=jnp.int32)) % capacity
    return jnp.where(valid_mask(buf), age, capacity).astype(jnp.int32)


def valid_data(buf: Buffer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host-side copy of the valid data, oldest first: ``([n, O], [n, A], [n, O])``.

    For inspection, tests and checkpoints; the fit itself reads the fixed-shape arrays
    with ``valid_mask``. Syncs with the device.
    """
    count, ptr = int(buf.count), int(buf.ptr)
    # Once full the oldest row sits at ptr; before that ptr == count and rolling by it
    # after slicing would be wrong, so only roll when full.
    order = np.arange(count) if count < buf.capacity else (np.arange(count) + ptr) % count
    obs, act, next_obs = (np.asarray(x)[order] for x in (buf.obs, buf.act, buf.next_obs))
    return obs, act, next_obs


@jax.jit
def _nonfinite_summary(
    obs: jax.Array, act: jax.Array, next_obs: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-array number of non-finite values ``[3]`` and first bad row ``[3]`` (-1: none)."""
    bad_counts, first_rows = [], []
    for x in (obs, act, next_obs):
        valid = (jnp.arange(x.shape[0]) < count)[:, None]
        bad = ~jnp.isfinite(x) & valid
        bad_row = bad.any(axis=1)
        bad_counts.append(bad.sum())
        first_rows.append(jnp.where(bad_row.any(), jnp.argmax(bad_row), -1))
    return jnp.stack(bad_counts), jnp.stack(first_rows)


def check_finite(obs, act, next_obs, count=None) -> None:
    """Raise ``ValueError`` if any of the first ``count`` rows holds NaN or inf.

    Host-side (one small device-to-host transfer; the reduction runs where the data
    lives, so a 100k-row buffer is not copied). Not jittable by design: call it before
    entering a jitted phase, as ``dynamics.fit`` does.

    Args:
      obs: ``[N, O]``; act: ``[N, A]``; next_obs: ``[N, O]`` (numpy or jax arrays).
      count: number of leading rows to check; all ``N`` when None.
    """
    # Checked in the data's own dtype: a float32 copy of float64 data would turn finite
    # values beyond float32's range into inf.
    obs, act, next_obs = (jnp.asarray(x) for x in (obs, act, next_obs))
    if count is None:
        count = obs.shape[0]
    bad_counts, first_rows = jax.device_get(
        _nonfinite_summary(obs, act, next_obs, jnp.asarray(count, jnp.int32))
    )
    problems = [
        f"{name} has {int(n)} NaN/inf value(s) (first at row {int(r)})"
        for name, n, r in zip(("obs", "act", "next_obs"), bad_counts, first_rows, strict=True)
        if n > 0
    ]
    if problems:
        raise ValueError(
            "non-finite transition data: "
            + "; ".join(problems)
            + "; refusing to fit the dynamics model on it (check the environment/policy)."
        )
