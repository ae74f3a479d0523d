#!/usr/bin/env bash
# Sums up the output of `cargo test --no-fail-fast` (a log file, or stdin):
#   tests/summarize.sh LOG [CARGO_STATUS] [SECONDS]
# prints one summary line ("== test summary: N passed, N failed, ...") and names
# every failed test and every test binary that crashed or was killed: a binary
# whose own tests all passed but that then died (a signal at exit, a non-zero exit
# status) counts as one failure, because CI fails it all the same.
# Exits 1 when anything failed (or cargo's status was non-zero), else 0.
set -euo pipefail
log="${1:--}"
cargo_status="${2:-0}"
secs="${3:-0}"
awk -v secs="$secs" -v cargo_status="$cargo_status" '
  # Which test binary the following lines belong to.
  /^ *Running / {
    src = $2
    # cargo prints the path relative here and absolute on failure: key by file name.
    key = $0; sub(/^.*\(/, "", key); sub(/\)[^)]*$/, "", key); sub(/^.*\//, "", key)
    bin = key; sub(/-[0-9a-f]+$/, "", bin)
    name[key] = bin " (" src ")"
    current = key
    next
  }
  /^ *Doc-tests / { current = "doc-tests " $2; name[current] = current; next }
  /^test result:/ {
    bins++; p += $4; f += $6; i += $8
    if (current != "") { failed_in[current] += $6; reported[current] = 1 }
    next
  }
  /^test .* FAILED$/ { failed_tests = failed_tests "\n  " $2; next }
  # cargo: "process did not exit successfully: `PATH ...` (signal: 11, SIGSEGV: ...)"
  /process didn.t exit successfully: `/ {
    key = $0; sub(/^[^`]*`/, "", key); sub(/[` ].*$/, "", key); sub(/^.*\//, "", key)
    why = $0; sub(/^.*` \(/, "", why); sub(/\)$/, "", why)
    if (!(key in failed_in) || failed_in[key] == 0) {
      crashed++
      who = (key in name) ? name[key] : key
      note = (key in reported) ? "after all its tests passed" : "before it reported its tests"
      crashes = crashes "\n  " who ": " why ", " note
    }
    next
  }
  END {
    total_failed = f + crashed
    printf "\n== test summary: %d passed, %d failed, %d ignored in %d test binaries (%d s)\n", p, total_failed, i, bins, secs
    if (failed_tests != "") printf "failed tests:%s\n", failed_tests
    if (crashed > 0) printf "crashed or killed test binaries (%d, each counted as a failure):%s\n", crashed, crashes
    if (bins == 0) printf "no test binary ran: the build failed (see above)\n"
    if (cargo_status != 0 && total_failed == 0 && bins > 0) printf "cargo test exited with status %d (see above)\n", cargo_status
    exit (total_failed > 0 || bins == 0 || cargo_status != 0) ? 1 : 0
  }' "$log"
