"""Time of the meta step's baseline fit, jaxlib's LAPACK QR against the plain-jnp one
(``returns.fit_linear_baseline(lapack=...)``), vmapped over T tasks of N rows of an
O-dimensional observation, with each fit's prediction error against float64 numpy.

    PYTHONPATH=. python docs/probes/baseline_fit_time.py T N O   # e.g. 10 2000 17
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import returns as ret

T, N, OBS = (int(a) for a in sys.argv[1:4])
rng = np.random.default_rng(0)
obs = rng.normal(size=(T, N // 200, 200, OBS)).astype(np.float32)
feats = ret.linear_features(jnp.asarray(obs)).reshape(T, N, -1)
y = jnp.asarray(rng.normal(size=(T, N)).astype(np.float32)) + feats[..., 0] * 3
w = jnp.asarray((rng.random((T, N)) < 0.9).astype(np.float32))
f64, y64, w64 = (np.asarray(a, np.float64) for a in (feats, y, w))
eye = np.eye(f64.shape[-1])
ref = np.stack(
    [
        np.linalg.solve(
            f64[t].T @ (w64[t, :, None] * f64[t]) + 1e-5 * eye, f64[t].T @ (w64[t] * y64[t])
        )
        for t in range(T)
    ]
)
pred = lambda c: np.einsum("tnf,tf->tn", f64, np.asarray(c, np.float64))  # noqa: E731
for lapack in (True, False):
    fit = jax.jit(jax.vmap(lambda f, t, m, lp=lapack: ret.fit_linear_baseline(f, t, m, 1e-5, lp)))
    c = fit(feats, y, w).block_until_ready()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        fit(feats, y, w).block_until_ready()
        times.append(time.perf_counter() - t0)
    err = np.abs(pred(c) - pred(ref)).max() / np.abs(pred(ref)).max()
    print(
        f"lapack={lapack}: T={T} N={N} F={feats.shape[-1]}: {np.median(times) * 1e3:.1f} ms "
        f"(median of 7), prediction rel. error {err:.1e}"
    )
