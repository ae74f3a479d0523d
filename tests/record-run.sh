#!/usr/bin/env bash
# Cargo's test runner during the first phase of tests/parallel.sh: instead of
# running a test binary it writes down how cargo would have run it (working
# folder, command line, environment), so that the second phase runs it exactly
# so, several binaries at once. Prints nothing: cargo sees a binary that passed.
# Doc tests come through here too (rustdoc uses the runner): they run at once,
# from rustdoc's temporary folder, which is gone by phase 2.
set -euo pipefail
case "$(realpath -m -- "$1")" in
  "$(realpath -m -- "$LETHE_TEST_TARGET")"/*) ;;
  *) exec "$@" ;;
esac
rec="$(mktemp "$LETHE_TEST_RECORDS/bin.XXXXXX")"
{ printf '%s\0' "$PWD"; printf '%s\0' "$@"; } >"$rec.cmd"
env -0 >"$rec.env"
