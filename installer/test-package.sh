#!/usr/bin/env bash
# Tests what installer/package.sh built, as a user gets it, with a clean environment
# (no LD_LIBRARY_PATH, no venv, no cargo, HOME in a scratch folder):
#   1. the tarball extracted into an empty folder: doctor, plugins list, headless demo,
#      and an unlearning run with a bundled plugin;
#   2. the .deb extracted into a fresh root (dpkg -x): the same but the demo from there;
#   3. with root: the .deb really installed with dpkg, run from /usr/bin, then removed;
#      a user workspace made in between must be untouched by the removal.
# Usage: installer/test-package.sh cpu|cuda
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variant="${1:-}"
case "$variant" in cpu|cuda) ;; *) echo "usage: installer/test-package.sh cpu|cuda" >&2; exit 2 ;; esac
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
name="lethe-$version-linux-x86_64-$variant"
tarball="$root/dist/$name.tar.gz"
deb="$root/dist/lethe_${version}-1_amd64-$variant.deb"
for f in "$tarball" "$deb"; do
  [ -f "$f" ] || { echo "test-package: $f is missing; run installer/package.sh $variant" >&2; exit 1; }
done

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
pass=0 fail=0
check() { # description, command...
  local what="$1"; shift
  if "$@" >"$scratch/out" 2>&1; then
    pass=$((pass + 1)); echo "ok   $what"
  else
    fail=$((fail + 1)); echo "FAIL $what"; sed 's/^/     /' "$scratch/out" | tail -n 20
  fi
}
# A user's environment: nothing from this build machine's development setup.
clean() { env -i HOME="$scratch/home" PATH=/usr/bin:/bin LANG=C.UTF-8 "$@"; }
mkdir -p "$scratch/home"

exercise() { # lethe executable, label, with_demo
  local lethe="$1" label="$2" with_demo="${3:-}"
  check "$label: doctor names libtorch 2.13.0" \
    clean sh -c "$(printf '%q' "$lethe") doctor | tee /dev/stderr | grep -q 'libtorch: 2.13.0'"
  check "$label: no library resolves outside the package or the system" \
    clean sh -c "! ldd $(printf '%q' "$lethe") | grep -E 'not found|\.venv|/work/'"
  check "$label: bundled plugins load" \
    clean sh -c "$(printf '%q' "$lethe") plugins list | tee /dev/stderr | grep -q 'org.lethe.baseline.finetune'"
  if [ -n "$with_demo" ]; then
    # The demo retrains for 30 epochs: once is enough, the binary is the same in
    # every layout.
    local out="$scratch/$label-demo"
    check "$label: headless demo deletion succeeds" \
      clean "$lethe" demo --out "$out" --device cpu
    check "$label: demo wrote its results" test -s "$out/report.json" -a -s "$out/unlearned.safetensors"
  fi
  local res
  res="$(dirname "$(dirname "$lethe")")/share/lethe/resources/demo"
  check "$label: an unlearning plugin runs on the demo" \
    clean "$lethe" unlearn --method org.lethe.baseline.gradient-ascent \
      --checkpoint "$res/classifier.safetensors" --data "$res/mnist10k.npz" \
      --forget "$res/forget.txt" --out "$scratch/$label-ga" --device cpu --set epochs=1
  check "$label: the unlearned model was saved" test -s "$scratch/$label-ga/model.safetensors"
}

echo "== tarball $tarball"
mkdir "$scratch/tar"
tar -C "$scratch/tar" -xzf "$tarball"
exercise "$scratch/tar/$name/bin/lethe" tarball with-demo

echo "== .deb extracted into a fresh root"
dpkg -x "$deb" "$scratch/root"
exercise "$scratch/root/usr/bin/lethe" deb-root
check "deb: desktop entry and icon" test -f "$scratch/root/usr/share/applications/lethe.desktop" \
  -a -f "$scratch/root/usr/share/icons/hicolor/scalable/apps/lethe.svg"

if [ "$(id -u)" -eq 0 ] && [ "${LETHE_TEST_DPKG_INSTALL:-1}" = 1 ] && ! dpkg -s lethe >/dev/null 2>&1; then
  echo "== dpkg -i / dpkg -r"
  check "dpkg installs it" dpkg -i "$deb"
  exercise /usr/bin/lethe installed
  # A user's workspace and plugin folder, created while it is installed.
  mkdir -p "$scratch/home/project" "$scratch/home/.local/share/lethe/plugins"
  echo keep > "$scratch/home/project/notes.txt"
  cp -r "$scratch/installed-ga" "$scratch/home/project/run"
  before="$(cd "$scratch/home" && find . -type f -exec sha256sum {} + | sort)"
  check "dpkg removes it" dpkg -r lethe
  check "nothing of it is left in /usr" sh -c '! ls /usr/bin/lethe /usr/lib/lethe 2>/dev/null'
  after="$(cd "$scratch/home" && find . -type f -exec sha256sum {} + | sort)"
  check "uninstall left the user's files untouched" test "$before" = "$after"
else
  echo "(skipping dpkg -i/-r: needs root and no lethe package installed already)"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
