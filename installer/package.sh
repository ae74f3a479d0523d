#!/usr/bin/env bash
# Builds what an end user installs, no compiler needed on their side:
#   dist/lethe-<version>-linux-x86_64-<variant>.tar.gz   portable folder
#   dist/lethe_<version>-1_amd64-<variant>.deb           Debian package (/usr)
# Usage: installer/package.sh cpu|cuda
#   cpu   libtorch's CPU libraries only (about 0.5 GB); computes on the CPU.
#   cuda  also libtorch_cuda and the CUDA runtime libraries from the torch wheel
#         (about 4 GB); uses an NVIDIA GPU when the NVIDIA driver is installed,
#         needs nothing else from the system.
# Both have the same layout (the .deb under /usr, the tarball under its folder):
#   bin/lethe                       rpath $ORIGIN/../lib/lethe/torch/lib
#   lib/lethe/plugins/*.so          the built-in methods and attacks
#   lib/lethe/torch/lib, nvidia/    libtorch as laid out in the wheel (its own
#                                   $ORIGIN-relative rpaths keep working)
#   share/lethe/resources/demo      the demo
#   share/applications, share/icons desktop entry and icon
# The CUDA variant links exactly as the development build does, so it builds in target/
# (a release build there, e.g. from ./run bench, is reused); the CPU variant builds in
# its own folder (target-package) so the development build is not relinked back and
# forth by LETHE_LINK_CUDA.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
variant="${1:-}"
case "$variant" in
  cpu) link_cuda=0 ;;
  cuda) link_cuda=1 ;;
  *) echo "usage: installer/package.sh cpu|cuda" >&2; exit 2 ;;
esac
log() { printf 'package: %s\n' "$*"; }

installer/setup.sh
command -v patchelf >/dev/null || { log "patchelf is missing (installer/setup.sh installs it)"; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
if [ "$link_cuda" = 1 ]; then target="target"; else target="target-package"; fi
site="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"

# The plugins users get: every cdylib under plugins/ except test fixtures and the template.
mapfile -t plugin_pkgs < <(installer/builtin-plugins.sh)
log "building lethe and ${#plugin_pkgs[@]} plugins ($variant) in $target"
args=(-p lethe)
for p in "${plugin_pkgs[@]}"; do args+=(-p "$p"); done
if [ "$link_cuda" = 1 ]; then
  # Unset, as in every other build of target/: a changed value would relink it all.
  env -u LETHE_LINK_CUDA CARGO_TARGET_DIR="$target" cargo build --release --quiet "${args[@]}"
else
  LETHE_LINK_CUDA=0 CARGO_TARGET_DIR="$target" cargo build --release --quiet "${args[@]}"
fi

name="lethe-$version-linux-x86_64-$variant"
stage="$target/stage/$name"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib/lethe/plugins" "$stage/share/lethe" \
  "$stage/share/applications" "$stage/share/icons/hicolor/scalable/apps"

# Debug line tables help developers, not users: they are most of the binaries' size.
install -m 755 "$target/release/lethe" "$stage/bin/lethe"
strip --strip-debug "$stage/bin/lethe"
patchelf --set-rpath '$ORIGIN/../lib/lethe/torch/lib' "$stage/bin/lethe"
for p in "${plugin_pkgs[@]}"; do
  so="$target/release/lib${p//-/_}.so"
  install -m 644 "$so" "$stage/lib/lethe/plugins/"
  strip --strip-debug "$stage/lib/lethe/plugins/$(basename "$so")"
  patchelf --set-rpath '$ORIGIN/../torch/lib' "$stage/lib/lethe/plugins/$(basename "$so")"
done

# libtorch, keeping the wheel's layout under lib/lethe so its relative rpaths hold.
copy_lib() { # path inside site-packages
  mkdir -p "$stage/lib/lethe/$(dirname "$1")"
  cp -L "$site/$1" "$stage/lib/lethe/$1"
}
if [ "$variant" = cuda ]; then
  # Everything the wheel ships, CUDA sublibraries loaded later with dlopen included
  # (cuDNN engines, NVRTC builtins), but not the Python bindings.
  for f in "$site"/torch/lib/*.so*; do
    case "$(basename "$f")" in libtorch_python.so|libshm*) continue ;; esac
    copy_lib "torch/lib/$(basename "$f")"
  done
  for d in "$site"/nvidia/*/lib; do
    rel="${d#"$site"/}"
    mkdir -p "$stage/lib/lethe/$rel"
    cp -a "$d/." "$stage/lib/lethe/$rel/"
  done
else
  # Exactly what the binary and the plugins load: resolved by the dynamic linker.
  for elf in "$stage/bin/lethe" "$stage"/lib/lethe/plugins/*.so; do
    LD_LIBRARY_PATH="$site/torch/lib" ldd "$elf" | awk '$3 ~ /^\// {print $3}'
  done | sort -u | while read -r lib; do
    real="$(readlink -f "$lib")"
    case "$real" in "$site"/*) copy_lib "${real#"$site"/}" ;; esac
  done
  if ldd "$stage/bin/lethe" | grep -q torch_cuda; then
    log "the CPU build still needs libtorch_cuda.so"; exit 1
  fi
fi

cp -r resources "$stage/share/lethe/"
install -m 644 installer/lethe.desktop "$stage/share/applications/lethe.desktop"
install -m 644 installer/lethe.svg "$stage/share/icons/hicolor/scalable/apps/lethe.svg"
install -m 644 installer/INSTALL.txt "$stage/README.txt"

mkdir -p dist
log "writing dist/$name.tar.gz"
tar -C "$target/stage" -czf "dist/$name.tar.gz.tmp" "$name"
mv "dist/$name.tar.gz.tmp" "dist/$name.tar.gz"

# Debian package: the same tree under /usr.
deb_root="$target/deb-$variant"
rm -rf "$deb_root"
mkdir -p "$deb_root/DEBIAN" "$deb_root/usr"
cp -a "$stage/bin" "$stage/lib" "$stage/share" "$deb_root/usr/"
installed_kb="$(du -sk "$deb_root/usr" | cut -f1)"
cat > "$deb_root/DEBIAN/control" <<EOF
Package: lethe
Version: $version-1
Architecture: amd64
Maintainer: Lethe developers <lethe@example.invalid>
Installed-Size: $installed_kb
Depends: libc6 (>= 2.34), libstdc++6, libgcc-s1, libx11-6, libxcursor1, libxrandr2, libxi6, libxkbcommon-x11-0, libgl1, libegl1, libfontconfig1
Recommends: zenity, libvulkan1, mesa-vulkan-drivers
Section: science
Priority: optional
Description: Lethe, a workbench for machine unlearning ($variant build)
 Removes chosen training data from a trained model (contrastive encoder or
 classifier) and checks with membership-inference attacks whether the
 forgotten data can still be detected. Methods and attacks are native plugins.
 This package ships libtorch ($variant) privately under /usr/lib/lethe.
 Uninstalling leaves user workspaces and ~/.local/share/lethe untouched.
EOF
deb="dist/lethe_${version}-1_amd64-$variant.deb"
log "writing $deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$deb_root" "$deb.tmp" >/dev/null
mv "$deb.tmp" "$deb"
ls -l "dist/$name.tar.gz" "$deb"
