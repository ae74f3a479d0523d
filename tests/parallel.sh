#!/usr/bin/env bash
# Runs the workspace's test binaries JOBS at a time (./run test on a clean tree):
#   tests/parallel.sh JOBS [PACKAGE SELECTION]   (default --workspace; e.g. -p lethe-attack-kit)
# Output has the shape of `cargo test --no-fail-fast` (tests/summarize.sh reads it),
# one binary's output in one piece when it ends, followed by its wall time.
#
# Why: a test binary runs its tests one at a time (RUST_TEST_THREADS=1: libtorch
# processes already use every core), and most of the suite's wall time is spent
# in subprocess start-up, polling and a Slurm scheduler's cycles, not arithmetic.
# Two binaries at once keep both cores busy.
#
# How: phase 1 is the real `cargo test --workspace --no-fail-fast` (build, doc
# tests), with tests/record-run.sh as the target's runner, which records each
# binary's working folder, command line and environment instead of running it.
# Phase 2 runs the records, the known-slow ones first, each in exactly the
# environment cargo gave it, plus OMP_WAIT_POLICY=PASSIVE: libtorch's OpenMP
# threads otherwise spin while they wait for work, and two processes spinning on
# two cores slow each other down. Thread counts stay as they are, so numerics are
# those of a sequential run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs="${1:-2}"
shift || true
selection=("$@")
((${#selection[@]})) || selection=(--workspace)

records="$(mktemp -d)"
outputs="$(mktemp -d)"
trap 'rm -rf "$records" "$outputs"' EXIT
# Interrupted: stop the binaries still running (they share our process group).
trap 'trap - INT TERM; kill -TERM 0; exit 130' INT TERM

# Test binaries live here; anything else cargo hands the runner (doc tests) runs at once.
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$PWD/$target"
triple="$(rustc -vV | sed -n 's/^host: //p')"
runner_var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_RUNNER"
env "$runner_var=$PWD/tests/record-run.sh" LETHE_TEST_RECORDS="$records" \
  LETHE_TEST_TARGET="$target" \
  cargo test "${selection[@]}" --no-fail-fast 2>&1
build_status=${PIPESTATUS[0]}

# The binaries that take longest start first, so that the last ones to finish
# are short (names as in target/debug/deps, without the hash; measured in CI logs).
slow=(slurm attacks_demo paper_methods ulira study gui_flow baselines_recent
  plugins_cli eval_cli deletion_certificate worker_jobs baselines fuzz_readers)
rank() {
  local stem="$1" i
  for i in "${!slow[@]}"; do
    [[ "$stem" == "${slow[$i]}" ]] && { echo "$i"; return; }
  done
  echo 99
}
queue=()
for cmd in "$records"/*.cmd; do
  [[ -e "$cmd" ]] || continue
  mapfile -d '' -t parts <"$cmd"
  stem="$(basename "${parts[1]}")"
  stem="${stem%-*}"
  queue+=("$(rank "$stem") ${cmd%.cmd}")
done
mapfile -t queue < <(printf '%s\n' "${queue[@]}" | sort -n -k1,1 | cut -d' ' -f2-)

# Runs one record; its output and a status line go to outputs/NAME.
run_one() {
  local rec="$1" name start status
  name="$(basename "$rec")"
  mapfile -d '' -t parts <"$rec.cmd"
  # Without the recording runner: a test that runs cargo itself (tests/e2e/
  # harness.rs) must get its binaries run.
  local kept=() kv
  mapfile -d '' -t envs <"$rec.env"
  for kv in "${envs[@]}"; do
    case "$kv" in
      "$runner_var="* | LETHE_TEST_RECORDS=* | LETHE_TEST_TARGET=*) ;;
      *) kept+=("$kv") ;;
    esac
  done
  start=$(date +%s)
  (
    cd "${parts[0]}" || exit 1
    exec env -i "${kept[@]}" OMP_WAIT_POLICY=PASSIVE "${parts[@]:1}"
  ) >"$outputs/$name.out" 2>&1
  status=$?
  echo "$status $(($(date +%s) - start))" >"$outputs/$name.status"
}

# Prints a finished record's output as cargo would have.
report() {
  local rec="$1" name exe status secs
  name="$(basename "$rec")"
  mapfile -d '' -t parts <"$rec.cmd"
  exe="${parts[1]}"
  read -r status secs <"$outputs/$name.status"
  printf '     Running %s (%s)\n' "$(basename "$exe")" "$exe"
  cat "$outputs/$name.out"
  if ((status != 0)); then
    failed=1
    local why="exit status: $status"
    if ((status > 128)); then
      why="signal: $((status - 128)), SIG$(kill -l $((status - 128)) 2>/dev/null)"
    fi
    printf "error: test failed\n  process didn't exit successfully: \`%s\` (%s)\n" "$exe" "$why"
  fi
  printf '     (%s took %d s)\n\n' "$(basename "$exe")" "$secs"
}

# Binaries that run with nothing beside them: the window tests drive real
# timing (a worker that crashes, a file read again after a restart) and once
# failed beside another binary (gui_flow's hostile-file test, 2026-12-08).
alone=(gui_flow)
is_alone() {
  local stem a parts
  mapfile -d '' -t parts <"$1.cmd"
  stem="$(basename "${parts[1]}")"
  stem="${stem%-*}"
  for a in "${alone[@]}"; do [[ "$stem" == "$a" ]] && return 0; done
  return 1
}

declare -A running=()
next=0
failed=0
solo=0
while ((next < ${#queue[@]})) || ((${#running[@]} > 0)); do
  while ((next < ${#queue[@]})) && ((${#running[@]} < jobs)) && ((solo == 0)); do
    if is_alone "${queue[$next]}"; then
      ((${#running[@]} > 0)) && break
      solo=1
    fi
    run_one "${queue[$next]}" &
    running[$!]="${queue[$next]}"
    next=$((next + 1))
  done
  wait -n 2>/dev/null
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      report "${running[$pid]}"
      unset "running[$pid]"
      solo=0
    fi
  done
done
((build_status != 0)) && exit "$build_status"
exit "$failed"
