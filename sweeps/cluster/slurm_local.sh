#!/usr/bin/env bash
# A real, single-node SLURM cluster on localhost, with accounting, for the sweep integration tests and for trying
# the SLURM launcher presets on one machine.
#
#   bash sweeps/cluster/slurm_local.sh start    install (Debian/Ubuntu, root) if needed, configure, start
#   bash sweeps/cluster/slurm_local.sh status   each daemon, `sinfo` and `sacct`; exit 1 when one is not answering
#   bash sweeps/cluster/slurm_local.sh stop     stop the daemons this script started, and only those
#   bash sweeps/cluster/slurm_local.sh stop-accounting    stop only slurmdbd, as when a real cluster's accounting
#   bash sweeps/cluster/slurm_local.sh start-accounting   stops answering (for the tests); start it again
#
# Idempotent: `start` on a running cluster only checks it (and restarts the SLURM daemons if their configuration
# changed). It needs root (apt-get, daemons running as root). One node named by `hostname -s`, addressed as
# 127.0.0.1 (no name lookup), one default partition `local`, munge authentication, no cgroups.
# Accounting as on a real cluster: slurmdbd on its own MariaDB instance (data under the state directory, TCP on
# 127.0.0.1 only), so `sacct` answers. Without it a job killed before it writes its result (scancel, out of
# memory) never reads as finished to submitit, and a blocking sweep waits forever.
# Settings chosen for tests: a requeued job restarts within seconds (cred_expire, sched_interval), finished jobs
# leave squeue after 30 s, a job told to stop is killed 10 s after SIGTERM.
# Each daemon runs in the foreground of its own session, so the pid recorded in $PIDS is the daemon's own; `stop`
# kills a recorded pid only while that process still has the daemon's name. A munged already answering is used
# as it is and left running. The configuration files are written only when absent or written by this script.
set -euo pipefail

STATE=/var/lib/seqbench-slurm
PIDS=$STATE/pids
DB_DIR=$STATE/mariadb
DB_SOCK=$DB_DIR/mariadb.sock
DB_PORT=16819  # the accounting database, on 127.0.0.1 (beside slurmdbd's 6819; clear of a system MariaDB's 3306)
DB_PASS=$STATE/db_password
LOGS=/var/log/seqbench-slurm
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by seqbench sweeps/cluster/slurm_local.sh"
CLUSTER=seqbench
PARTITION=local
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"  # start order; stop runs it backwards

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

started() {  # name: is the process this script recorded for `name` still that daemon (and not its zombie)?
    local pid
    [ -f "$PIDS/$1" ] || return 1
    pid=$(cat "$PIDS/$1")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && [ "$(cut -d ' ' -f 3 "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

spawn() {  # name command...: run a daemon in the foreground of its own session, record its pid
    local name=$1
    shift
    mkdir -p "$PIDS" "$LOGS"
    # Without job control `setsid` does not fork, so $! is the daemon itself.
    setsid "$@" </dev/null >>"$LOGS/$name.console" 2>&1 &
    echo $! > "$PIDS/$name"
}

wait_for() {  # name seconds command...: until the command succeeds, while the daemon is alive
    local name=$1 tries=$(( $2 * 5 ))
    shift 2
    for _ in $(seq "$tries"); do
        "$@" >/dev/null 2>&1 && return
        started "$name" || die "$name exited: $(tail -n 5 "$LOGS/$name.console" 2>/dev/null)"
        sleep 0.2
    done
    die "$name did not answer within $(( tries / 5 )) s; see $LOGS"
}

answers() { timeout 10 sinfo -h -o %T >/dev/null 2>&1; }
munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
db_answers() { mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping; }
dbd_answers() { timeout 10 sacctmgr -n list cluster; }
sacct_answers() { timeout 10 sacct -n -X -S now >/dev/null 2>&1; }

install() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null || \
        missing+=(slurmctld slurmd slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
    [ ${#missing[@]} = 0 ] && return
    command -v apt-get >/dev/null || die "apt-get is missing: install ${missing[*]} by hand"
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # The packages would start their own services; this script runs its own instances instead.
    local deny=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        deny=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$deny" && chmod 755 "$deny"
    fi
    local failed=0
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || failed=1
    [ -z "$deny" ] || rm -f "$deny"
    [ $failed = 0 ] || die "apt-get install ${missing[*]} failed"
}

start_munge() {
    munge_answers && return  # ours from an earlier start, or the system's: either way it serves
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
    spawn munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for munged 10 munge_answers
}

start_mariadb() {
    started mariadbd && return
    if [ ! -d "$DB_DIR/mysql" ]; then
        log "creating the accounting database in $DB_DIR"
        rm -rf "$DB_DIR"
        mkdir -p "$DB_DIR"
        chown mysql:mysql "$DB_DIR"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOGS"
    fi
    # The smallest sizes slurmdbd accepts without logging an error (half its recommendation); the buffer pool is
    # reserved, not resident, so it holds about 130 MB.
    spawn mariadbd mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCK" \
        --bind-address=127.0.0.1 --port=$DB_PORT --skip-name-resolve --log-error="$LOGS/mariadb.log" \
        --innodb-buffer-pool-size=512M --innodb-log-file-size=32M --innodb-lock-wait-timeout=900
    wait_for mariadbd 60 db_answers
    [ -s "$DB_PASS" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DB_PASS")
    mariadb --no-defaults --socket="$DB_SOCK" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DB_PASS")';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DB_PASS")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

refuse_foreign() {  # file (the script lived in harness/cluster/ before; what it wrote there is ours too)
    if [ -f "$1" ] && ! head -n 1 "$1" | grep -qE "^# written by seqbench (harness|sweeps)/cluster/slurm_local\.sh$"; then
        die "$1 exists and was not written by this script; refusing to overwrite a real cluster's configuration"
    fi
}

put() {  # file mode < text: replace the file when its text differs; status 0 when it changed
    cat > "$1.tmp"
    chmod "$2" "$1.tmp"
    if [ -f "$1" ] && cmp -s "$1" "$1.tmp"; then rm -f "$1.tmp"; return 1; fi
    mv "$1.tmp" "$1"
}

write_conf() {  # status 0 when a file changed (the SLURM daemons running the old one must then restart)
    refuse_foreign "$CONF"
    refuse_foreign "$DBD_CONF"
    local host cpus mem changed=1
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave 1 GiB to the system; jobs without a memory request get 1 GiB per CPU (DefMemPerCPU), so
    # they share the node instead of each taking all of its memory.
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOGS"
    # slurmdbd refuses a configuration (it holds the database password) readable by others.
    put "$DBD_CONF" 600 <<CONF && changed=0
$MARK
AuthType=auth/munge
DbdHost=$host
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=/run/seqbench-slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DB_PASS")
StorageLoc=slurm_acct_db
CONF
    put "$CONF" 644 <<CONF && changed=0
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/seqbench-slurmctld.pid
SlurmdPidFile=/run/seqbench-slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
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
    return $changed
}

start_slurmdbd() {
    started slurmdbd || spawn slurmdbd slurmdbd -D
    wait_for slurmdbd 60 dbd_answers
    # slurmctld records jobs only for a cluster the database knows.
    local clusters
    clusters=$(sacctmgr -n -P list cluster format=cluster)
    grep -qx "$CLUSTER" <<<"$clusters" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

node_up() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

start() {
    [ "$(id -u)" = 0 ] || die "needs root (installs packages and runs the daemons as root)"
    local t0=$SECONDS d all=0
    for d in $DAEMONS; do started "$d" || { [ "$d" = munged ] && munge_answers; } || all=1; done
    install
    start_munge
    start_mariadb
    if write_conf; then
        for d in slurmd slurmctld slurmdbd; do stop_daemon "$d"; done
    elif [ $all = 0 ] && answers && sacct_answers; then
        log "already running"
        sinfo
        return
    fi
    start_slurmdbd
    started slurmctld || spawn slurmctld slurmctld -D
    started slurmd || spawn slurmd slurmd -D
    for _ in $(seq 150); do
        if node_up && sacct_answers; then
            log "cluster up in $(( SECONDS - t0 )) s: partition $PARTITION on $(hostname -s), accounting in slurmdbd"
            sinfo
            return
        fi
        for d in slurmctld slurmd; do
            started "$d" || die "$d exited: $(tail -n 5 "$LOGS/$d.console" "$LOGS/$d.log" 2>/dev/null)"
        done
        # A node left DOWN by an earlier run (e.g. after a reboot) is brought back.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 0.2
    done
    die "the node did not become idle with accounting within 30 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop_daemon() {  # name: only the process this script started, and only while it is still that daemon
    if ! started "$1"; then rm -f "$PIDS/$1"; return; fi
    local pid
    pid=$(cat "$PIDS/$1")
    kill "$pid"
    for _ in $(seq 300); do  # MariaDB flushes its tables before it exits
        started "$1" || { rm -f "$PIDS/$1"; log "stopped $1"; return; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDS/$1"
    log "killed $1"
}

stop() {
    # Jobs first, so no job process outlives its daemons.
    if started slurmctld && answers; then
        scancel --full --quiet --state=RUNNING,PENDING --partition="$PARTITION" 2>/dev/null || true
    fi
    local d
    for d in $(echo $DAEMONS | tr ' ' '\n' | tac); do stop_daemon "$d"; done
}

status() {
    local ok=0 d
    for d in $DAEMONS; do
        if started "$d"; then
            echo "$d: running (pid $(cat "$PIDS/$d"))"
        elif [ "$d" = munged ] && munge_answers; then
            echo "munged: running (not started by this script)"
        else
            echo "$d: not running"
            ok=1
        fi
    done
    if answers; then sinfo; else echo "sinfo: not answering"; ok=1; fi
    if sacct_answers; then echo "sacct: answering"; else echo "sacct: not answering"; ok=1; fi
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    stop-accounting) stop_daemon slurmdbd ;;
    start-accounting) start_slurmdbd ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status|stop-accounting|start-accounting" >&2; exit 2 ;;
esac
