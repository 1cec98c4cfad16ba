#!/usr/bin/env bash
# A device lease's measurements as one command (the `device` tool's `run`, carrying .whl:
# see tools/device_wheels.sh and WORKSPACE.md, "Benchmarking and experiments"). Each
# argument is a stage, run in order:
#   bench          experiments.benchmark, float32 products at XLA's GPU default (TF32
#                  allowed), both ensemble precisions, one whole paper iteration (issue 18)
#   bench_tf32off  the same with TF32 off (JAX_DEFAULT_MATMUL_PRECISION=highest), no iteration
#   "seeds [N,N..]"  experiments.bench_seeds, paper configuration, N = 2, 4 unless given
#                  (issue 18; N = 1 was measured in the second lease; each N compiles two
#                  programs, about 2 min per N on an H200)
#   "run NAME ENV FIRST_SEED NUM_SEEDS [--preset=P] [--config.F=V ...]"
#                  a learning run, the seeds as one program, the paper configuration to
#                  101k real steps (5,000 + 24 x 4,000) unless the arguments say otherwise
#                  (issue 15); its run directories' config.json and metrics.csv come back
#   "bg run ..."   the same run started in the background, beside the next stages (the GPU
#                  is latency-bound at the paper's sizes: concurrent runs share it well);
#                  with any bg stage, JAX's preallocation of GPU memory is off for all
#   wait           waits for the background runs (the end of the stages waits too)
# With no argument: bench bench_tf32off "run hc-paper halfcheetah 0 3" (the first lease's).
# Each stage runs under its own time limit (what is left of MBMPO_DEVICE_BUDGET_S, default
# 560 s), so a stage that fails or overruns leaves the next its time; a run cut short keeps
# the rows it wrote (say so when committing it). $OUT gets device.log, dmon.txt (GPU
# utilisation every 5 s), bench_*.json and runs.tgz: at most 8 files, as the tool allows.
# MBMPO_DEVICE_CHECK_QUICK=1 runs every stage at smoke sizes (a dry run on a CPU).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device.log") 2>&1
T0=$(date +%s)
BUDGET=${MBMPO_DEVICE_BUDGET_S:-560}
left() { echo $((BUDGET - ($(date +%s) - T0))); }
stamp() { echo "=== $(date -u +%FT%TZ) +$(($(date +%s) - T0))s: $*"; }
cap() { # cap SECONDS: the smaller of SECONDS and what is left less 20 s for packing up
  local l=$(($(left) - 20))
  echo $((l < $1 ? l : $1))
}
QUICK=0
[ "${MBMPO_DEVICE_CHECK_QUICK:-0}" = 1 ] && QUICK=1
[ $# -eq 0 ] && set -- bench bench_tf32off "run hc-paper halfcheetah 0 3"

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
BENCH=(--no_loop --repeats=3)
[ $QUICK = 1 ] && BENCH=(--no_loop --quick --repeats=1)
rm -rf /tmp/runs && mkdir -p /tmp/runs
for stage in "$@"; do
  [ "${stage%% *}" = bg ] && export XLA_PYTHON_CLIENT_PREALLOCATE=false
done

BG=()
wait_bg() { # not a bare `wait`: that would wait for the tee of the log too
  local pid
  for pid in "${BG[@]}"; do wait "$pid"; done
  BG=()
}

run_stage() { # run NAME ENV FIRST_SEED NUM_SEEDS [extra...]
  if [ $# -lt 5 ]; then echo "bad stage: $*"; return; fi
  local name=$2 env=$3 first=$4 n=$5
  local extra=("${@:6}")
  local base=(--preset=paper --config.num_iterations=24)
  [ $QUICK = 1 ] && base=(--preset=smoke)
  stamp "run $name: $env seeds $first..$((first + n - 1)) ${base[*]} ${extra[*]}"
  timeout -s KILL "$(cap 100000)" python3 -m experiments.run --env="$env" "${base[@]}" \
    --seed="$first" --num_seeds="$n" "${extra[@]}" --logdir="/tmp/runs/$name" \
    > "/tmp/runs/$name.log" 2>&1 || echo "run $name exit $?"
  tail -n 30 "/tmp/runs/$name.log"
  stamp "run $name ended"
}

for stage in "$@"; do
  read -r -a words <<< "$stage"
  if [ "$(left)" -lt 40 ]; then stamp "skipped (time): $stage"; continue; fi
  case "${words[0]}" in
    bench)
      stamp "benchmark, float32 products at XLA's default (TF32 allowed on a GPU)"
      timeout -s KILL "$(cap 210)" python3 -m experiments.benchmark "${BENCH[@]}" \
        --out="$OUT/bench_default.json" || echo "benchmark (default) exit $?" ;;
    bench_tf32off)
      stamp "benchmark, TF32 off (JAX_DEFAULT_MATMUL_PRECISION=highest), no iteration"
      JAX_DEFAULT_MATMUL_PRECISION=highest timeout -s KILL "$(cap 110)" \
        python3 -m experiments.benchmark "${BENCH[@]}" --no_iteration \
        --out="$OUT/bench_highest.json" || echo "benchmark (highest) exit $?" ;;
    seeds)
      stamp "seeds in one program against one after another, N = ${words[1]:-2,4}"
      P=paper; [ $QUICK = 1 ] && P=smoke
      timeout -s KILL "$(cap 320)" python3 -m experiments.bench_seeds --env=halfcheetah \
        --preset=$P --num_seeds="${words[1]:-2,4}" --out="$OUT/bench_seeds.json" \
        || echo "bench_seeds exit $?" ;;
    run) run_stage "${words[@]}" ;;
    bg)
      if [ "${words[1]:-}" != run ]; then echo "bad stage: $stage"; continue; fi
      run_stage "${words[@]:1}" &
      BG+=($!)
      sleep 2 ;;
    wait) stamp "waiting for the background runs"; wait_bg ;;
    *) echo "unknown stage: $stage" ;;
  esac
done
wait_bg
tar czf "$OUT/runs.tgz" -C /tmp/runs --exclude=checkpoints --exclude=.lock --exclude=tb . 2>&1
pkill -f "nvidia-smi dmon" 2>/dev/null
stamp done
