# Shared by scripts/pressure.sh and scripts/starve.sh (sourced, not run): create a cgroup for
# one controller (memory or cpu) on cgroup v1 or v2, set its limit, run a command inside it,
# read its counters, remove it. Needs root and a writable cgroup file system.
#
#   cg_detect memory|cpu     sets CG_VERSION (v1|v2) and CG_ROOT, or explains and returns 1
#   cg_create <name>         sets CG_DIR (the new group's directory), or explains and returns 1
#   cg_exec <cmd...>         runs cmd inside CG_DIR (exec: same pid)
#   cg_remove                moves leftover processes to the parent group and removes CG_DIR

CG_VERSION=
CG_ROOT=
CG_DIR=
CG_CONTROLLER=

cg_detect() { # memory|cpu
  CG_CONTROLLER=$1
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    CG_VERSION=v2
    CG_ROOT=/sys/fs/cgroup
    if ! grep -qw "$CG_CONTROLLER" /sys/fs/cgroup/cgroup.controllers; then
      echo "cgroup v2 at $CG_ROOT has no $CG_CONTROLLER controller (cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers))" >&2
      return 1
    fi
  elif [[ -d /sys/fs/cgroup/$CG_CONTROLLER ]] && grep -qE " /sys/fs/cgroup/$CG_CONTROLLER(,[a-z]+)? cgroup " /proc/mounts; then
    CG_VERSION=v1
    CG_ROOT=/sys/fs/cgroup/$CG_CONTROLLER
  elif grep -qE "^cgroup [^ ]+ cgroup [^ ]*\b$CG_CONTROLLER\b" /proc/mounts; then
    CG_VERSION=v1
    CG_ROOT=$(awk -v c="$CG_CONTROLLER" '$3 == "cgroup" && $4 ~ ("(^|,)" c "(,|$)") {print $2; exit}' /proc/mounts)
  else
    echo "no cgroup file system with the $CG_CONTROLLER controller is mounted (neither v2 at /sys/fs/cgroup nor v1 /sys/fs/cgroup/$CG_CONTROLLER)" >&2
    return 1
  fi
  return 0
}

cg_create() { # name
  CG_DIR=$CG_ROOT/$1
  if ! mkdir -p "$CG_DIR" 2>/dev/null; then
    echo "cgroups are not writable: cannot create $CG_DIR (cgroup $CG_VERSION; need root and a read-write cgroup mount, e.g. not inside an unprivileged container)" >&2
    CG_DIR=
    return 1
  fi
  if [[ $CG_VERSION == v2 ]]; then
    # The parent must delegate the controller to its children.
    echo "+$CG_CONTROLLER" >"$CG_ROOT/cgroup.subtree_control" 2>/dev/null || true
    if [[ ! -e $CG_DIR/$(cg_limit_file) ]]; then
      echo "cgroups are not writable: $CG_DIR has no $(cg_limit_file) (the $CG_CONTROLLER controller is not enabled in $CG_ROOT/cgroup.subtree_control)" >&2
      rmdir "$CG_DIR" 2>/dev/null || true
      CG_DIR=
      return 1
    fi
  fi
  if [[ ! -w $CG_DIR/$(cg_limit_file) ]]; then
    echo "cgroups are not writable: $CG_DIR/$(cg_limit_file) is read-only" >&2
    return 1
  fi
  return 0
}

cg_limit_file() {
  case $CG_CONTROLLER/$CG_VERSION in
    memory/v1) echo memory.limit_in_bytes ;;
    memory/v2) echo memory.max ;;
    cpu/v1) echo cpu.cfs_quota_us ;;
    cpu/v2) echo cpu.max ;;
  esac
}

cg_exec() { # cmd...  (the shell moves itself into the group, then becomes cmd)
  exec bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG_DIR" "$@"
}

cg_remove() {
  [[ -n $CG_DIR && -d $CG_DIR ]] || return 0
  local parent
  parent=$(dirname "$CG_DIR")
  if [[ -f $CG_DIR/cgroup.procs ]]; then
    while read -r p; do echo "$p" >"$parent/cgroup.procs" 2>/dev/null || true; done <"$CG_DIR/cgroup.procs"
  fi
  rmdir "$CG_DIR" 2>/dev/null || true
}

# --- memory
cg_mem_set_limit() { # bytes
  echo "$1" >"$CG_DIR/$(cg_limit_file)"
}
cg_mem_usage() {
  if [[ $CG_VERSION == v1 ]]; then cat "$CG_DIR/memory.usage_in_bytes"; else cat "$CG_DIR/memory.current"; fi
}
cg_mem_failcnt() { # v1 failcnt; v2 the "max" event count (times usage hit memory.max)
  if [[ $CG_VERSION == v1 ]]; then cat "$CG_DIR/memory.failcnt"; else awk '$1 == "max" {print $2}' "$CG_DIR/memory.events"; fi
}
cg_mem_oom_kills() {
  if [[ $CG_VERSION == v1 ]]; then
    awk '$1 == "oom_kill" {print $2; f=1} END {if (!f) print "n/a"}' "$CG_DIR/memory.oom_control"
  else
    awk '$1 == "oom_kill" {print $2}' "$CG_DIR/memory.events"
  fi
}
cg_mem_under_oom() {
  if [[ $CG_VERSION == v1 ]]; then awk '$1 == "under_oom" {print $2}' "$CG_DIR/memory.oom_control"; else echo 0; fi
}

# --- cpu
cg_cpu_set_quota() { # fraction of one CPU, e.g. 0.5; "max" lifts it
  local period=100000
  if [[ $1 == max ]]; then
    if [[ $CG_VERSION == v1 ]]; then echo -1 >"$CG_DIR/cpu.cfs_quota_us"; else echo "max $period" >"$CG_DIR/cpu.max"; fi
    return
  fi
  local quota
  quota=$(awk -v f="$1" -v p="$period" 'BEGIN {printf "%d", f * p}')
  if [[ $CG_VERSION == v1 ]]; then
    echo "$period" >"$CG_DIR/cpu.cfs_period_us"
    echo "$quota" >"$CG_DIR/cpu.cfs_quota_us"
  else
    echo "$quota $period" >"$CG_DIR/cpu.max"
  fi
}
cg_cpu_throttled() { # "nr_periods nr_throttled throttled_ms"
  awk '$1 == "nr_periods" {p=$2} $1 == "nr_throttled" {t=$2} $1 == "throttled_time" {ms=$2/1e6} $1 == "throttled_usec" {ms=$2/1e3}
       END {printf "%d %d %d\n", p, t, ms}' "$CG_DIR/cpu.stat"
}

# --- shared by pressure.sh and starve.sh ---------------------------------------------------

# Build palim and the harness for `profile` (debug|release) unless `skip` is non-empty.
build_palim_and_harness() { # profile skip
  [[ -n ${2:-} ]] && return 0
  local flag=()
  [[ $1 == release ]] && flag=(--release)
  cargo build "${flag[@]}" -p signaling --bin palim
  cargo build "${flag[@]}" -p loadtest --bin loadtest
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A loopback palim config with its REST API on `rest-port`, written to `file`; standard input
# (more TOML) is appended.
write_palim_config() { # file rest-port
  cat >"$1" <<EOF
[ice]
bind_address = "127.0.0.1"
udp_port = 0
host_addresses = ["127.0.0.1"]
[rest]
bind = "127.0.0.1:$2"
stats_interval = "0s"
EOF
  cat >>"$1"
}
