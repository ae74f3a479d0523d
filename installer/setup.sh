#!/usr/bin/env bash
# Prepares this checkout for building and testing Lethe on Debian/Ubuntu x86_64.
# Idempotent: each step checks first and is silent when already done.
#   1. Debian packages for the build, the GUI and headless GUI tests (apt-get).
#   2. A project-local Python venv (.venv) with the exact torch that tch expects,
#      plus the Python oracles the tests compare against (pip, PyPI only).
#   3. .libtorch -> the libtorch inside that venv; .cargo/config.toml points
#      LIBTORCH there, so plain `cargo build` / `cargo test` work afterwards.
# Environment: LETHE_SKIP_APT=1 skips step 1 (no root); PYTHON picks the interpreter.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# torch-sys 0.26 checks for exactly this version (see its build.rs).
TORCH_VERSION="2.13.0"
# Python-side oracles for numerical cross-checks in the tests.
PY_EXTRA=("numpy==2.4.6" "scikit-learn==1.9.1" "safetensors==0.8.0")

APT_PACKAGES=(
  # build: C++ compiler for tch's libtorch shim, pkg-config, readelf (binutils)
  build-essential pkg-config binutils
  # GUI runtime (eframe loads these at run time): X11, Wayland, GL, Vulkan
  libx11-6 libxcursor1 libxrandr2 libxi6 libxkbcommon0 libxkbcommon-x11-0
  libwayland-client0 libwayland-egl1 libgl1 libegl1 libgl1-mesa-dri libvulkan1 mesa-vulkan-drivers
  libfontconfig1
  # headless GUI tests and screenshots; PDF report checks
  xvfb x11-apps imagemagick poppler-utils
  # packaging (installer/package.sh): rewrite rpaths to $ORIGIN-relative ones
  patchelf
  # GUI file dialogs without an XDG portal (rfd falls back to zenity); driving the
  # window under Xvfb: xdotool, and a window manager so the window gets keyboard focus
  zenity xdotool openbox
  # Fashion-MNIST, 70,000 real images (MIT): `--data fashion-mnist`
  dataset-fashion-mnist
  # Slurm: cluster runs (`--executor slurm`), and the tests start a one-node cluster of
  # their own (tests/slurm/cluster.sh; the packages' own services stay unconfigured)
  slurmctld slurmd slurm-client munge
)

log() { printf 'setup: %s\n' "$*"; }

install_apt() {
  [ "${LETHE_SKIP_APT:-0}" = "1" ] && return 0
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { log "need root to install: ${missing[*]}"; exit 1; }
    sudo="sudo"
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

venv_ok() {
  [ -x .venv/bin/python ] || return 1
  .venv/bin/python - "$TORCH_VERSION" "${PY_EXTRA[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want_torch, extras = sys.argv[1], sys.argv[2:]
assert version("torch").split("+")[0] == want_torch
for spec in extras:
    name, ver = spec.split("==")
    assert version(name) == ver, spec
PY
}

free_gib() { df -P -B1G "$root" | awk 'NR == 2 { print $4 }'; }

# torch with its CUDA libraries takes ~5 GiB installed plus ~3 GiB of downloads
# while pip works, and the cold debug build needs ~15 GiB more under target/.
check_disk() {
  local need=9 have
  have="$(free_gib)"
  if [ "$have" -lt "$need" ]; then
    log "not enough disk space on the file system of $root: $have GiB free, torch needs about $need GiB (and the build ~15 GiB more)"
    exit 1
  fi
}

install_python() {
  venv_ok && return 0
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || { log "python3 is required (3.10+)"; exit 1; }
  [ -x .venv/bin/python ] || { log "creating .venv"; "$py" -m venv .venv; }
  check_disk
  log "installing torch==$TORCH_VERSION and test oracles into .venv (PyPI)"
  # No pip cache: the CUDA wheels are ~3 GB and a cached copy would double the
  # disk this needs; pip's unpack folders go under .venv so a full disk names it.
  mkdir -p .venv/tmp
  TMPDIR="$root/.venv/tmp" .venv/bin/python -m pip install -q --no-cache-dir \
    --disable-pip-version-check --progress-bar off "torch==$TORCH_VERSION" "${PY_EXTRA[@]}" || {
    rm -rf .venv/tmp
    log "pip could not install torch into $root/.venv (free there now: $(free_gib) GiB; see pip's error above)"
    exit 1
  }
  rm -rf .venv/tmp
  venv_ok || { log "torch $TORCH_VERSION is not importable from .venv after install"; exit 1; }
}

link_libtorch() {
  local torch_dir
  torch_dir="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
  [ -f "$torch_dir/lib/libtorch_cpu.so" ] || { log "no libtorch_cpu.so under $torch_dir/lib"; exit 1; }
  local rel="${torch_dir#"$root"/}"
  if [ "$(readlink .libtorch 2>/dev/null)" != "$rel" ]; then
    ln -sfn "$rel" .libtorch
    log "linked .libtorch -> $rel"
  fi
}

install_apt
install_python
link_libtorch
