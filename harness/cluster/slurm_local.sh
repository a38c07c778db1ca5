#!/usr/bin/env bash
# A real, single-node SLURM cluster on localhost, for the sweep integration tests and for trying the
# SLURM launcher presets on one machine.
#
#   bash harness/cluster/slurm_local.sh start    install (Debian/Ubuntu, root) if needed, configure, start
#   bash harness/cluster/slurm_local.sh status   the daemons' pids and `sinfo`; exit 1 when not answering
#   bash harness/cluster/slurm_local.sh stop     stop slurmd, slurmctld and the munged this script started
#
# Idempotent: `start` on a running cluster only checks it. It needs root (apt-get, daemons running as
# root). One node named by `hostname -s`, addressed as 127.0.0.1 (no name lookup), one default
# partition `local`, munge authentication, no cgroups, no accounting database: `sacct` answers
# "accounting storage is disabled", which submitit tolerates (it reads job states from squeue).
# Settings chosen for tests: a requeued job restarts within seconds (cred_expire, sched_interval),
# finished jobs leave squeue after 30 s, a job told to stop is killed 10 s after SIGTERM.
# The configuration is written to /etc/slurm/slurm.conf only when that file is absent or ours.
set -euo pipefail

STATE=/var/lib/seqbench-slurm
LOGS=/var/log/seqbench-slurm
CONF=/etc/slurm/slurm.conf
MARK="# written by seqbench harness/cluster/slurm_local.sh"
CTLD_PID=/run/seqbench-slurmctld.pid
SLURMD_PID=/run/seqbench-slurmd.pid
MUNGE_PID=/run/munge/munged.pid
PARTITION=local

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
answers() { timeout 10 sinfo -h -o %T >/dev/null 2>&1; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing: install slurmctld, slurmd, slurm-client and munge"
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages try to start their services; without systemd that fails harmlessly.
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    if alive "$MUNGE_PID" || (munge -n 2>/dev/null | unmunge >/dev/null 2>&1); then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    if [ -f "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
        die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's configuration"
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave 1 GiB to the system; jobs without a memory request get 1 GiB per CPU (DefMemPerCPU), so
    # they share the node instead of each taking all of its memory.
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOGS"
    cat > "$CONF.tmp" <<CONF
$MARK
ClusterName=seqbench
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
KillWait=10
MinJobAge=30
InactiveLimit=0
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.tmp" "$CONF"
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (installs packages and runs the daemons as root)"
    if alive "$CTLD_PID" && alive "$SLURMD_PID" && answers; then
        log "already running"
        sinfo
        return
    fi
    install
    start_munge
    write_conf
    alive "$CTLD_PID" || slurmctld
    alive "$SLURMD_PID" || slurmd
    for _ in $(seq 150); do
        if [ "$(timeout 5 sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null)" = idle ] \
            || timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            log "cluster up: partition $PARTITION on $(hostname -s)"
            sinfo
            return
        fi
        # A node left DOWN by an earlier run (e.g. after a reboot) is brought back once.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 0.2
    done
    die "the node did not become idle within 30 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop_pid() {  # name pidfile
    alive "$2" || { rm -f "$2"; return; }
    local pid
    pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$2"; log "stopped $1"; return; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$2"
    log "killed $1"
}

stop() {
    # Jobs first, so no job process outlives its daemons.
    if answers; then scancel --full --quiet --state=RUNNING,PENDING --partition="$PARTITION" 2>/dev/null || true; fi
    stop_pid slurmd "$SLURMD_PID"
    stop_pid slurmctld "$CTLD_PID"
    stop_pid munged "$MUNGE_PID"
}

status() {
    local ok=0
    for d in "slurmctld $CTLD_PID" "slurmd $SLURMD_PID" "munged $MUNGE_PID"; do
        set -- $d
        if alive "$2"; then echo "$1: running (pid $(cat "$2"))"; else echo "$1: not running"; ok=1; fi
    done
    if answers; then sinfo; else echo "sinfo: not answering"; ok=1; fi
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
