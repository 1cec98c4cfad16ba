"""`mbmpo_jax._compat.device_put_replicated`, the definition brax 0.14.2's PPO needs on jax >= 0.10.

Reference: `np.stack([x] * n)` for the values, and the removed function's documented
contract for the placement (slice i of the new leading axis on `devices[i]`), checked on 3
forced host devices in a subprocess (the device count is fixed when JAX starts), where
`jax.pmap` must also accept the result as it accepts brax's replicated training state.
"""

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import _compat
from tests._cli import forced_devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree():
    return {"w": jnp.arange(6.0).reshape(2, 3), "steps": np.int32(7), "scale": 1.5}


def _jax_has_it():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return hasattr(jax, "device_put_replicated")


def test_values_shapes_and_dtypes_on_one_device():
    out = _compat.device_put_replicated(_tree(), jax.local_devices()[:1])
    np.testing.assert_array_equal(out["w"], np.arange(6.0, dtype=np.float32).reshape(1, 2, 3))
    assert out["steps"].shape == (1,) and out["steps"].dtype == jnp.int32
    assert int(out["steps"][0]) == 7
    # A Python float becomes JAX's default float, as jax.device_put would make it.
    assert out["scale"].dtype == jnp.zeros(()).dtype and float(out["scale"][0]) == 1.5


def test_matches_jax_own_definition_where_it_exists():
    if not _jax_has_it():
        pytest.skip(f"jax {jax.__version__} no longer has device_put_replicated")
    devices = jax.local_devices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = jax.device_put_replicated(_tree(), devices)
    out = _compat.device_put_replicated(_tree(), devices)
    for k in ref:
        assert out[k].shape == ref[k].shape and out[k].dtype == ref[k].dtype, k
        np.testing.assert_array_equal(out[k], ref[k])
        assert out[k].sharding.device_set == ref[k].sharding.device_set


def test_rejects_no_devices():
    with pytest.raises(ValueError, match="non-empty"):
        _compat.device_put_replicated(_tree(), [])


def test_installed_only_where_missing():
    had = _jax_has_it()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        before = getattr(jax, "device_put_replicated", None)
    try:
        assert _compat.install_device_put_replicated() is (not had)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            now = jax.device_put_replicated
        assert now is (before if had else _compat.device_put_replicated)
        assert _compat.install_device_put_replicated() is False  # idempotent
    finally:
        if not had:
            delattr(jax, "device_put_replicated")  # leave jax as this test found it


SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from mbmpo_jax import _compat

devices = jax.local_devices()
assert len(devices) == 3, devices
x = {"w": jnp.arange(6.0).reshape(2, 3), "b": np.float32(2.0)}
out = _compat.device_put_replicated(x, devices[::-1])  # any order of devices is honoured
shards = sorted(out["w"].addressable_shards, key=lambda s: s.index[0].start)
doubled = jax.pmap(lambda t: jax.tree.map(lambda a: 2 * a, t))(out)
print(json.dumps({
    "shape": list(out["w"].shape),
    "rows_on": [s.device.id for s in shards],
    "rows_equal_x": all(np.array_equal(s.data[0], x["w"]) for s in shards),
    "pmap_ok": bool(np.array_equal(doubled["w"], 2 * np.stack([x["w"]] * 3)))
               and bool(np.array_equal(doubled["b"], [4.0] * 3)),
}))
"""


def test_slice_i_lives_on_device_i_and_pmap_takes_it():
    env = forced_devices_env(3)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["shape"] == [3, 2, 3]
    assert got["rows_on"] == [2, 1, 0]  # CPU device ids 0, 1, 2, passed in reverse
    assert got["rows_equal_x"] and got["pmap_ok"]
