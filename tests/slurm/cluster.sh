#!/usr/bin/env bash
# A self-contained one-node Slurm cluster in one folder, for the tests of
# `--executor slurm`: real daemons from Debian's packages (slurmctld, slurmd,
# munge; installer/setup.sh installs them), nothing from /etc/slurm or the
# system's munged, so it works beside a system cluster, and two of these share
# no socket or state file (their ports are picked at random among free ones).
#
#   tests/slurm/cluster.sh start  DIR   make DIR (if needed), start munged,
#                                       slurmctld and slurmd, wait until the node
#                                       is idle, print the client environment
#                                       (`SLURM_CONF=DIR/slurm.conf`) on stdout
#   tests/slurm/cluster.sh stop   DIR   cancel the cluster's jobs, stop its daemons
#   tests/slurm/cluster.sh status DIR   exit 0 iff the daemons live and the node answers
#
# Clients (sbatch, squeue, scancel, sinfo, scontrol) find the cluster through
# SLURM_CONF alone, e.g. `export $(tests/slurm/cluster.sh start /tmp/c)`.
# `start` on a running cluster only prints the environment again; `stop` on a
# stopped one does nothing. Both are safe to call at any time.
#
# Environment: CLUSTER_OWNER_PID=PID (start only) stops the cluster within a
# second or two of that process ending, so a test binary that is killed before its
# destructors run does not leave root daemons behind.
#
# Must run as root: slurmd starts every job as its submitting user, and jobs
# here run as root with the submitter's environment (sbatch's --export=ALL).
#
# Layout of DIR (all of it made afresh whenever start starts daemons):
#   slurm.conf  plugstack.conf  munge/{munge.key,munge.socket,munged.*}
#   state/ (StateSaveLocation)  spool/ (SlurmdSpoolDir)  run/NAME.pid (ours)
#   log/{slurmctld,slurmd}.log  log/NAME.out (each daemon's stderr)
#   log/jobcomp.txt (one line per finished job, with its exit code)
set -euo pipefail

prog="cluster.sh"
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() { die "usage: $prog start|stop|status DIR"; }
[ $# -eq 2 ] || usage
cmd="$1"
case "$cmd" in start | stop | status) ;; *) usage ;; esac

# The daemons' sockets live under DIR (unix socket paths are limited to 107
# bytes, slurmd's step sockets add ~30) and slurm.conf cannot quote spaces.
case "$2" in *[[:space:]]*) die "DIR must not contain white space: '$2'" ;; esac
if [ "$cmd" = start ]; then mkdir -p "$2"; fi
if [ ! -d "$2" ]; then
  # Nothing was ever started there: stopped, and not running.
  [ "$cmd" = stop ] && exit 0
  die "no cluster folder $2"
fi
dir="$(cd "$2" && pwd)"
conf="$dir/slurm.conf"
run="$dir/run"

need_tools() {
  local t missing=()
  for t in munged slurmctld slurmd sbatch squeue scancel sinfo scontrol; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing ${missing[*]}: run installer/setup.sh (Debian packages slurmctld slurmd slurm-client munge)"
}

# Clients of this cluster: every Slurm command gets the cluster's slurm.conf.
slurm() { SLURM_CONF="$conf" "$@"; }

# alive NAME: the process recorded as NAME (run/NAME.pid) runs and is still that
# program. A dead daemon can linger as a zombie until init reaps it (kill -0
# succeeds on a zombie), and a recycled PID belongs to some other program: both
# count as dead.
alive() {
  local pid state comm
  pid="$(cat "$run/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] || return 1
  [ -r "/proc/$pid/stat" ] || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  case "$1" in
    watchdog) [ "$comm" = bash ] || [ "$comm" = sleep ] || [ "$comm" = cluster.sh ] ;;
    *) [ "$comm" = "$1" ] ;;
  esac
}

node_name() { cat "$run/node" 2>/dev/null || hostname -s; }

# The node's state as sinfo prints it (%t: idle, mix, alloc, down*, …; a
# trailing * means the node does not answer).
node_state() { slurm sinfo -h -n "$(node_name)" -o %t 2>/dev/null | head -n1; }

ctld_up() { slurm scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_idle() { [ "$(node_state)" = idle ]; }

is_up() {
  alive munged && alive slurmctld && alive slurmd || return 1
  ctld_up || return 1
  case "$(node_state)" in
    idle | mix | alloc | comp) return 0 ;;
    *) return 1 ;;
  esac
}

# A TCP port nobody on this machine uses (listening or connected), picked at
# random below Linux's ephemeral range (32768+) so a client's outgoing
# connection cannot take it between the choice and the daemon's bind.
used_ports=" "
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
    case "$used_ports" in *" $p "*) continue ;; esac
    if command -v ss >/dev/null 2>&1; then
      [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] || continue
    else
      # No ss: a port something listens on accepts a connection.
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    fi
    used_ports+="$p "
    echo "$p"
    return 0
  done
  die "found no free TCP port"
}

# launch NAME CMD...: runs a daemon in the foreground mode of its own program,
# in the background here, and records its PID. Its output goes to
# log/NAME.out (never to our stdout: a caller reading our output to its end
# would wait for the daemon to exit), and fd 9 (the lock) is not inherited.
launch() {
  local name="$1"
  shift
  (cd "$dir" && exec env SLURM_CONF="$conf" "$@" </dev/null >>"$dir/log/$name.out" 2>&1 9>&-) &
  echo $! >"$run/$name.pid"
}

# wait_for SECONDS DAEMON WHAT CMD...: polls CMD every 0.2 s until it
# succeeds; gives up after SECONDS (CMD may itself block for a while: a client
# retries a silent controller), or at once when DAEMON has exited.
wait_for() {
  local limit="$1" daemon="$2" what="$3" deadline pid
  shift 3
  deadline=$((SECONDS + limit))
  pid="$(cat "$run/$daemon.pid")"
  while ! "$@"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
      say "$daemon exited"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$what did not happen within $limit s"
      return 1
    fi
    sleep 0.2
  done
}

# Stopped, with its logs named, when start fails half-way.
fail_start() {
  say "$1"
  local f
  # The daemons' stderr: in the foreground they log there too, and a fatal
  # error before their log file opens is only there.
  for f in "$dir"/log/*.out; do
    [ -s "$f" ] || continue
    say "--- last lines of $f"
    tail -n 15 "$f" >&2
  done
  do_stop
  exit 1
}

print_env() { printf 'SLURM_CONF=%s\n' "$conf"; }

# The job processes of this cluster: they inherit SLURM_CONF from the daemons
# (slurmstepd) or from the submitter (the job's programs, which also carry
# SLURM_JOB_ID). A shell that only exported SLURM_CONF is not one of them.
job_processes() {
  local p env
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = $$ ] && continue
    env="$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ")" || continue
    grep -qxF "SLURM_CONF=$conf" <<<"$env" || continue
    # slurmstepd renames itself ("slurmstepd: [6.batch]").
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in slurmstepd*) echo "$p"; continue ;; esac
    if grep -q '^SLURM_JOB_ID=' <<<"$env"; then echo "$p"; fi
  done
}

do_stop() {
  local name i pids
  # Jobs first, through the controller, so their steps end the normal way
  # (slurmstepd outlives slurmd; killing the daemons would orphan the jobs).
  if alive slurmctld && alive munged; then
    slurm scancel --quiet --partition=debug 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      [ -z "$(slurm squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # The watchdog is not needed any more (and must not run stop again); when
  # this stop is the watchdog's own (it execs us), it ends with us.
  if alive watchdog && [ "$(cat "$run/watchdog.pid")" != $$ ]; then
    kill -TERM "$(cat "$run/watchdog.pid")" 2>/dev/null || true
  fi
  # slurmd, then slurmctld (it saves its state), munged last (both use it).
  for name in slurmd slurmctld munged; do
    alive "$name" || continue
    kill -TERM "$(cat "$run/$name.pid")" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$name" || break
      sleep 0.2
    done
    if alive "$name"; then
      say "$name did not stop on TERM within 10 s: KILL"
      kill -KILL "$(cat "$run/$name.pid")" 2>/dev/null || true
    fi
  done
  # Whatever job process survived (a step whose daemons went first).
  pids="$(job_processes)"
  if [ -n "$pids" ]; then
    say "killing leftover job processes: ${pids//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$run"/munged.pid "$run"/slurmctld.pid "$run"/slurmd.pid "$run"/watchdog.pid
}

write_conf() {
  local node="$1" ctld_port="$2" slurmd_port="$3" hw mem_kib real_mem cpus def_mem
  # The node's real topology, as slurmd itself detects it (CPUs, boards,
  # sockets, cores, threads): a NodeName line that claims more than slurmd finds
  # makes the controller drain the node. RealMemory comes from below.
  hw="$(slurmd -C 2>/dev/null | head -n1 | tr ' ' '\n' |
    grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')" || hw=""
  [ -n "$hw" ] || hw="CPUs=$(nproc) "
  cpus="$(sed -nE 's/.*CPUs=([0-9]+).*/\1/p' <<<"$hw")"
  # A bit below the memory that is free now (90 % of MemAvailable), so the
  # node's RealMemory never exceeds what slurmd finds and jobs do not page.
  mem_kib="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)"
  real_mem=$((mem_kib * 9 / 10240))
  [ "$real_mem" -ge 256 ] || real_mem=256
  # Without a default, CR_Core_Memory gives each job all the node's memory and
  # jobs would run one at a time: a job gets its CPUs' share unless it asks.
  def_mem=$((real_mem / cpus))

  cat >"$conf" <<EOF
# Written by tests/slurm/cluster.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); rewritten on each start.
ClusterName=lethe-test
# The node's address is given, so no DNS lookup of the host name is needed.
SlurmctldHost=$node(127.0.0.1)
# Ports picked free on this start: a system slurmctld (6817/6818) or another
# test cluster does not collide.
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
# Our own munged (its socket under this folder), not the system's.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$run/slurmctld.daemon.pid
SlurmdPidFile=$run/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups in containers: processes are tracked through /proc, tasks not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
# No slurmdbd: no accounting, so sacct has nothing to read. A finished job's
# state and exit code stay visible in "scontrol show job ID" (and squeue -t all)
# for MinJobAge s, and every finished job leaves a line in log/jobcomp.txt
# (JobId=… JobState=… ExitCode=code:signal …).
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MinJobAge=300
# A node that was DOWN comes back as soon as its slurmd registers.
ReturnToService=2
MpiDefault=none
# scancel: TERM, then KILL after 2 s (default 30) so tests do not wait.
KillWait=2
MailProg=/bin/true
# No SPANK plugins from /etc/slurm.
PlugStackConfig=$dir/plugstack.conf
NodeName=$node NodeAddr=127.0.0.1 ${hw}RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$dir/plugstack.conf"
}

# The watchdog (CLUSTER_OWNER_PID): polls its owner and stops the cluster when
# it is gone. It keeps none of our output descriptors open.
start_watchdog() {
  local owner="$1" self
  self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
  (
    while kill -0 "$owner" 2>/dev/null; do sleep 1; done
    exec "$self" stop "$dir"
  ) </dev/null >>"$dir/log/watchdog.out" 2>&1 9>&- &
  echo $! >"$run/watchdog.pid"
}

do_start() {
  need_tools
  [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts each job as its submitting user)"
  if is_up; then
    print_env
    return 0
  fi
  # Half-started or crashed: whatever is left of it goes, then a fresh start
  # (fresh state, so a stale one cannot leave the node DOWN).
  do_stop
  rm -rf "$dir/munge" "$dir/state" "$dir/spool" "$dir/log" "$run" "$conf"
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log" "$run"
  # munged insists that every folder on its socket's path is searchable by all
  # (clients of any user connect there): the caller's temporary folder is 0700.
  chmod 0755 "$dir" "$dir/munge"

  local node ctld_port slurmd_port
  node="$(hostname -s)"
  echo "$node" >"$run/node"
  ctld_port="$(free_port)"
  slurmd_port="$(free_port)"
  write_conf "$node" "$ctld_port" "$slurmd_port"

  # A fresh key for this cluster only, readable by its owner alone (munged
  # refuses a key others can read).
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$dir/munge/munge.key" --bits=1024
  else
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=128 count=1 status=none
  fi
  chmod 0400 "$dir/munge/munge.key"

  # --force: run even where munged's checks of the folders on its paths would
  # refuse (e.g. DIR inside a group-writable folder); this munged serves
  # nobody but this cluster.
  launch munged munged --foreground --force \
    --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$run/munged.daemon.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  wait_for 10 munged "munged's socket" test -S "$dir/munge/munge.socket" ||
    fail_start "munged did not start"

  # -D: foreground (we hold its PID); -c: no state from an earlier run.
  launch slurmctld slurmctld -D -c -f "$conf"
  wait_for 30 slurmctld "slurmctld answering" ctld_up ||
    fail_start "slurmctld did not come up"
  launch slurmd slurmd -D -f "$conf" -N "$node"
  wait_for 60 slurmd "node $node idle" node_idle ||
    fail_start "node $node did not become idle (state: $(node_state))"

  if [ -n "${CLUSTER_OWNER_PID:-}" ]; then
    start_watchdog "$CLUSTER_OWNER_PID"
  fi
  say "cluster lethe-test up in $dir (node $node, slurmctld port $ctld_port, slurmd port $slurmd_port)"
  print_env
}

do_status() {
  if is_up; then
    say "up: node $(node_name) $(node_state), munged/slurmctld/slurmd running"
    return 0
  fi
  local name states=()
  for name in munged slurmctld slurmd; do
    if alive "$name"; then states+=("$name running"); else states+=("$name not running"); fi
  done
  # sinfo retries a dead controller for ~10 s: only ask a living one.
  if alive slurmctld && alive munged; then states+=("node state '$(node_state)'"); fi
  say "not up: $(IFS=,; echo "${states[*]}")"
  return 1
}

# One command at a time per cluster folder (a start and a stop racing would leave
# daemons nobody recorded). The daemons do not inherit this descriptor.
exec 9>>"$dir/.cluster.lock"
flock 9

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
esac
