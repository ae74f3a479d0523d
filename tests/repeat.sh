#!/usr/bin/env bash
# Runs one test binary N times and reports every run that did not exit 0 (a
# failed test, or a crash such as a SIGSEGV at exit after all tests passed):
#   tests/repeat.sh NAME|PATH N [-- ARGS...]
# NAME is a cargo test target (`gui_flow`, `lethe_engine` for the engine's unit
# tests); it is built first (`cargo test --no-run`) and run the way cargo runs it
# (from its package folder). ARGS go to the test binary (a test name filter,
# `--test-threads 1`, ...). Each run's output is kept in a temporary folder that
# is named at the end. Exits 1 if any run failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: tests/repeat.sh NAME|PATH N [-- ARGS...]" >&2; exit 2; }
target="$1"; runs="$2"; shift 2
[ "${1:-}" = "--" ] && shift
[[ "$runs" =~ ^[0-9]+$ ]] && [ "$runs" -ge 1 ] || { echo "repeat: N must be a positive number, not '$runs'" >&2; exit 2; }

if [ -x "$target" ] && [ -f "$target" ]; then
  exe="$(realpath "$target")"; pkgdir="$PWD"
else
  # The executable and package folder of the named test target.
  build_log="$(mktemp)"
  trap 'rm -f "$build_log"' EXIT
  if ! json="$(cargo test --workspace --no-run --message-format=json 2>"$build_log")"; then
    echo "repeat: building the test binaries failed:" >&2
    tail -30 "$build_log" >&2
    exit 2
  fi
  found="$(printf '%s\n' "$json" | python3 -c '
import json, os, sys
want = sys.argv[1]
found = None
# Reads everything: stopping early would break the pipe cargo writes to.
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if found is None and t["name"].replace("-", "_") == want.replace("-", "_") and m["profile"]["test"]:
        found = m["executable"] + "\t" + os.path.dirname(m["manifest_path"])
if found:
    print(found)
' "$target")"
  [ -n "$found" ] || { echo "repeat: no test target named '$target' (cargo test --no-run found none)" >&2; exit 2; }
  exe="${found%%$'\t'*}"; pkgdir="${found#*$'\t'}"
fi

logs="$(mktemp -d "${TMPDIR:-/tmp}/repeat-$(basename "$exe").XXXX")"
echo "repeat: $exe, $runs runs, in $pkgdir; logs in $logs"
bad=0
for n in $(seq 1 "$runs"); do
  start=$(date +%s)
  set +e
  (cd "$pkgdir" && CARGO_MANIFEST_DIR="$pkgdir" "$exe" "$@") >"$logs/run-$n.log" 2>&1
  code=$?
  set -e
  secs=$(( $(date +%s) - start ))
  summary="$(grep -E '^test result:' "$logs/run-$n.log" | tail -1 || true)"
  if [ "$code" -eq 0 ]; then
    echo "run $n: exit 0 (${secs} s) ${summary}"
  else
    bad=$(( bad + 1 ))
    if [ "$code" -gt 128 ]; then
      sig=$(( code - 128 ))
      what="killed by signal $sig ($(kill -l "$sig" 2>/dev/null || echo '?'))"
    else
      what="exit status $code"
    fi
    echo "run $n: $what (${secs} s) ${summary:-no test result line}; log: $logs/run-$n.log"
  fi
done
echo "repeat: $(( runs - bad )) of $runs runs exited cleanly, $bad did not"
[ "$bad" -eq 0 ]
