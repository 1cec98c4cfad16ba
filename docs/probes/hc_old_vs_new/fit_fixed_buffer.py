"""The ensemble fit of two code versions on the same real data (issue 14's HalfCheetah check).

    python docs/probes/hc_old_vs_new/extract_buffer.py RUN_DIR OUT.npz   # a checkpoint's buffer
    PYTHONPATH=<checkout> python docs/probes/hc_old_vs_new/fit_fixed_buffer.py OUT.npz M SEEDS

Fits the cpu preset's ensemble (5 x (256, 256), 50 epochs) from a fresh init on the first M
transitions of the buffer, once per seed, and reports the fit's own validation loss and the
MSE of every model's prediction on the next 4,000 transitions (fresh data: the two
iterations collected after those M). Uses only API that the 2026-11-25 code (7c4a6cb) and
today's share, so `PYTHONPATH` picks the version.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import dynamics

d = np.load(sys.argv[1])
m = int(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")]
obs, act, nxt = d["obs"], d["act"], d["next_obs"]
cfg = dynamics.EnsembleConfig(
    num_models=5,
    hidden=(256, 256),
    activation="relu",
    weight_norm=False,
    learning_rate=1e-3,
    batch_size=500,
    max_epochs=50,
    valid_split=0.2,
    persistency=0.99,
    obs_clip=1000.0,
)
buf = buffer_lib.init(100_000, obs.shape[1], act.shape[1])
buf = buffer_lib.add(buf, obs[:m], act[:m], nxt[:m])
ho = slice(m, m + 4000)
out = []
for s in seeds:
    k1, k2 = jax.random.split(jax.random.PRNGKey(s))
    st = dynamics.init(k1, obs.shape[1], act.shape[1], cfg)
    t = time.time()
    st, info = dynamics.fit(st, buf, k2, cfg)
    pred = np.asarray(dynamics.predict(st, jnp.asarray(obs[ho]), jnp.asarray(act[ho])))
    err = ((pred - nxt[ho][None]) ** 2).mean(axis=(1, 2))  # per model, raw space
    # normalised by the held-out deltas' std per dim
    dstd = (nxt[ho] - obs[ho]).std(0) + 1e-8
    nerr = (((pred - nxt[ho][None]) / dstd) ** 2).mean(axis=(1, 2))
    out.append(
        dict(
            seed=s,
            valid=float(np.mean(info.valid_loss)),
            train=float(np.mean(info.train_loss)),
            epochs=float(np.mean(info.epochs)),
            fresh_mse=float(err.mean()),
            fresh_nmse=float(nerr.mean()),
            secs=round(time.time() - t, 1),
        )
    )
    print(json.dumps(out[-1]), flush=True)
