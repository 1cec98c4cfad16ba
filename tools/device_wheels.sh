#!/usr/bin/env bash
# Downloads the wheels a GPU machine of this workplace lacks (its image has Python 3.12,
# jax 0.11.2, flax, optax, chex, orbax-checkpoint, absl-py, matplotlib, numpy, scipy) into
# .whl/ (about 35 MB; kept out of git by .git/info/exclude). Versions are the ones tested
# here. On the device, start a command with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
# and pass carry=[".whl"] (see WORKSPACE.md, "Benchmarking and experiments").
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PKGS=(
  brax==0.14.2 jaxopt==0.8.5 trimesh==5.2.0 flask==3.1.3 flask-cors==6.0.5 blinker==1.9.0
  itsdangerous==2.2.0 ml-collections==1.1.0 tensorboardX==2.6.5
  mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets glfw==2.11.0
  pyopengl==3.1.10 mujoco-mjx==3.17.0
)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${PKGS[@]}"
du -sh .whl
