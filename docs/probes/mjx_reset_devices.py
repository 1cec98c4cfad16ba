"""brax's HalfCheetah reset pmapped over D XLA host devices, N envs per device: prints
"reset done" or hangs (jaxlib's batched Cholesky waiting on the pool; WORKSPACE.md,
`experiments.baseline --cpu_devices`). Run under `timeout`:

    timeout 60 taskset -c 0,1 python docs/probes/mjx_reset_devices.py 800 2   # runs
    timeout 60 taskset -c 0,1 python docs/probes/mjx_reset_devices.py 850 2   # hangs
"""

import sys
import time

import jax

n, d = int(sys.argv[1]), int(sys.argv[2])
jax.config.update("jax_num_cpu_devices", d)
from brax import envs  # noqa: E402

env = envs.get_environment("halfcheetah", backend="mjx")
keys = jax.random.split(jax.random.PRNGKey(0), d * n).reshape(d, n, -1)
t = time.time()
state = jax.pmap(jax.vmap(env.reset))(keys)
jax.block_until_ready(state)
print(f"reset done: {d} devices x {n} envs in {time.time() - t:.1f} s", flush=True)
