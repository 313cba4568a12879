#!/usr/bin/env bash
# Creates or refreshes .venv at the repository root: torch, the requirements, detectron2 v0.6 (pure
# Python, from its PyPI sdist, corrected by tools/build_detectron2.py) and this project in editable
# mode. Idempotent: .venv/.setup-stamp holds a hash of every file that shapes the environment, and a
# matching stamp installs nothing.
#
# Environment: PYTHON (interpreter for the venv, default python3), TORCH_PINS (the exact torch and
# torchvision to install, default this machine's local wheels; set it empty to let pip choose).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_PINS=${TORCH_PINS-"torch==2.14.1 torchvision==0.29.1"}
VENV=.venv
STAMP=$VENV/.setup-stamp
D2_SDIST=pb1-detectron2==0.6
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

wanted=$(cat requirements.txt pyproject.toml tools/setup_env.sh tools/build_detectron2.py | sha256sum | cut -d' ' -f1)
wanted="$wanted $TORCH_PINS"
if [[ -f $STAMP && "$(cat $STAMP)" == "$wanted" ]]; then
  echo "[setup] .venv is up to date (stamp $STAMP matches); nothing to install"
  exit 0
fi

t_all=$SECONDS
step() {  # step NAME COMMAND...: runs one named, timed step and names it if it fails
  local name=$1; shift
  local t0=$SECONDS
  echo "[setup] $name ..."
  if ! "$@"; then
    echo "[setup] FAILED at step: $name" >&2
    exit 1
  fi
  echo "[setup] $name: done in $((SECONDS - t0)) s"
}

rm -f "$STAMP"
pip_q=(-q --disable-pip-version-check)
step "create $VENV with $($PYTHON --version 2>&1)" $PYTHON -m venv $VENV
# shellcheck disable=SC2086
step "install torch ($([[ -n $TORCH_PINS ]] && echo "$TORCH_PINS" || echo "unpinned"))" \
  $VENV/bin/pip install "${pip_q[@]}" $TORCH_PINS -r <(grep -E '^(torch|torchvision)[<>=]' requirements.txt)
pins_file=$(mktemp)
trap 'rm -rf "$pins_file" "${d2_build:-}"' EXIT
$VENV/bin/pip freeze | grep -iE '^(torch|torchvision)==' >"$pins_file"
step "install requirements.txt" $VENV/bin/pip install "${pip_q[@]}" -r requirements.txt -c "$pins_file"

install_detectron2() {
  d2_build=$(mktemp -d)
  $VENV/bin/pip download "${pip_q[@]}" --no-deps --no-build-isolation --no-binary :all: \
    -d "$d2_build" "$D2_SDIST"
  local tarball
  tarball=$(ls "$d2_build"/*.tar.gz)
  if ! echo "$D2_SHA256  $tarball" | sha256sum --check --quiet; then
    echo "[setup] $tarball does not have the expected sha256 $D2_SHA256" >&2
    return 1
  fi
  tar -xzf "$tarball" -C "$d2_build"
  local src
  src=$(ls -d "$d2_build"/pb1-detectron2-*/)
  # v0.6's sources predate today's numpy, Pillow, Python and torch, and the sdist has no C++ sources.
  $VENV/bin/python tools/build_detectron2.py "$src"
  # A build of the uncorrected sources may be installed under the same version: replace it.
  $VENV/bin/pip uninstall "${pip_q[@]}" -y pb1-detectron2 2>/dev/null || true
  $VENV/bin/pip install "${pip_q[@]}" --no-build-isolation "$src" -c "$pins_file"
}
# An upstream build, or ours from an earlier set-up, imports on its own; v0.6 as released does not.
if (cd /tmp && $VENV/bin/python -c "import detectron2.engine, detectron2.evaluation, detectron2.modeling") 2>/dev/null; then
  echo "[setup] detectron2 $($VENV/bin/python -c 'import detectron2; print(detectron2.__version__)') already installed"
else
  step "build detectron2 from $D2_SDIST (pure Python)" install_detectron2
fi
step "install this project (editable)" \
  $VENV/bin/pip install "${pip_q[@]}" --no-deps --no-build-isolation -e .
step "check the stack imports" $VENV/bin/python -c "import common.environment as e; print('[setup]', e.describe())"

echo "$wanted" >"$STAMP"
echo "[setup] environment ready in $((SECONDS - t_all)) s; $(du -sh $VENV | cut -f1) in $VENV"
