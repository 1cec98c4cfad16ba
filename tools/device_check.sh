#!/usr/bin/env bash
# One device lease's measurements, as one command of at most ~9.5 minutes (the `device`
# tool's `run`, carrying .whl: see tools/device_wheels.sh and WORKSPACE.md):
#   1. experiments.benchmark with float32 products as XLA's GPU default has them (TF32
#      allowed), both ensemble precisions, the whole paper iteration included (issue 18);
#   2. the same with TF32 off (JAX_DEFAULT_MATMUL_PRECISION=highest), no iteration;
#   3. the paper configuration on HalfCheetah, seeds 0-2 as one program, for what time is
#      left (issue 15): its metrics rows and the log come back, its checkpoints do not.
# Each stage has its own time limit, so a stage that fails or overruns leaves the next its
# time. Everything lands in $OUT: device.log, bench_*.json, runs.tgz, dmon.txt.
# MBMPO_DEVICE_CHECK_QUICK=1 runs the same stages at smoke sizes (a dry run on a CPU).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device.log") 2>&1
T0=$(date +%s)
BUDGET=${MBMPO_DEVICE_BUDGET_S:-560}
left() { echo $((BUDGET - ($(date +%s) - T0))); }
stamp() { echo "=== $(date -u +%FT%TZ) +$(($(date +%s) - T0))s: $*"; }

stamp install
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
python3 -c "import jax, brax, mujoco; print('jax', jax.__version__, jax.devices(), 'mujoco', mujoco.__version__)"
(nvidia-smi dmon -s um -d 5 > "$OUT/dmon.txt" 2>&1 &)

if [ "${MBMPO_DEVICE_CHECK_QUICK:-0}" = 1 ]; then
  QUICK=(--quick --repeats=1); RUN=(--preset=smoke)
else
  QUICK=(--repeats=3); RUN=(--preset=paper --config.num_iterations=24)
fi

stamp "benchmark, float32 products at XLA's default (TF32 allowed on a GPU)"
timeout -s KILL 210 python3 -m experiments.benchmark --no_loop "${QUICK[@]}" \
  --out="$OUT/bench_default.json" || echo "benchmark (default) exit $?"

stamp "benchmark, TF32 off (JAX_DEFAULT_MATMUL_PRECISION=highest), no iteration"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout -s KILL 110 python3 -m experiments.benchmark \
  --no_loop --no_iteration "${QUICK[@]}" --out="$OUT/bench_highest.json" \
  || echo "benchmark (highest) exit $?"

stamp "HalfCheetah, ${RUN[*]}, seeds 0-2 as one program, $(($(left) - 20)) s"
rm -rf /tmp/runs && mkdir -p /tmp/runs
timeout -s KILL $(($(left) - 20)) python3 -m experiments.run --env=halfcheetah "${RUN[@]}" \
  --seed=0 --num_seeds=3 --logdir=/tmp/runs/hc-paper || echo "run exit $?"
tar czf "$OUT/runs.tgz" -C /tmp/runs --exclude=checkpoints --exclude=.lock . 2>&1
pkill -f "nvidia-smi dmon" 2>/dev/null
stamp done
