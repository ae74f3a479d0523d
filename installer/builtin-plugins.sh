#!/usr/bin/env bash
# Prints the cargo package names of the built-in plugins, one a line: every
# cdylib under plugins/ except the test fixtures and the template. Used by
# `./run demo` (so the first run finds every method and attack) and by
# installer/package.sh (what users get).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && python=.venv/bin/python
cargo metadata --no-deps --format-version 1 | "$python" -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    path = p["manifest_path"]
    if "/plugins/" not in path or "test-fixture" in path or "/plugins/template/" in path:
        continue
    if any("cdylib" in t["crate_types"] for t in p["targets"]):
        print(p["name"])
'
