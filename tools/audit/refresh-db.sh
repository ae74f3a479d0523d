#!/usr/bin/env bash
# Refreshes tools/audit/advisory-db.tar.gz, the copy of the RustSec advisory
# database (CC0-1.0) that `./run audit` checks Cargo.lock against. Needs a
# machine that reaches GitHub (CI here cannot: that is why the copy is kept).
#   tools/audit/refresh-db.sh [existing advisory-db checkout]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ $# -ge 1 ]]; then
  src="$1"
else
  git clone --depth 1 https://github.com/rustsec/advisory-db "$work/advisory-db"
  src="$work/advisory-db"
fi
mkdir -p "$work/db"
git -C "$src" archive HEAD crates LICENSE.txt | tar -x -C "$work/db"
git -C "$src" log -1 --format='%H %cs rustsec/advisory-db' > "$work/db/SNAPSHOT"
tar -C "$work/db" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2000-01-01' \
  -czf "$here/advisory-db.tar.gz" .
echo "advisory-db.tar.gz: $(cat "$work/db/SNAPSHOT"), $(find "$work/db/crates" -name '*.md' | wc -l) advisories"
