"""The buffer of a run directory's newest checkpoint, as an .npz (obs, act, next_obs).

    python docs/probes/hc_old_vs_new/extract_buffer.py RUN_DIR OUT.npz

Read a copy of the run directory if the run is still going (the checkpointer may tidy).
"""

import sys

import jax
import numpy as np

from mbmpo_jax import mbmpo, rundir
from mbmpo_jax.checkpoint import Checkpointer

run = sys.argv[1]
cfg = rundir.resume_config(run)
tr = mbmpo.Trainer(cfg)
key = jax.random.PRNGKey(cfg.seed)
ck = Checkpointer(run, keep=100)
step = ck.latest_step()
st = ck.restore(step, tr.empty_state(key), tr.older_layouts(key))
b = st.buffer
n = int(b.count)
print("step", step, "count", n, type(st).__name__)
np.savez(
    sys.argv[2],
    obs=np.asarray(b.obs[:n]),
    act=np.asarray(b.act[:n]),
    next_obs=np.asarray(b.next_obs[:n]),
)
