#!/usr/bin/env bash
# One command of paper-scale ListOps runs on a lent GPU machine (10 minutes a command, 30 a session): a clean checkout
# of this repository at COMMIT (gpu/repo.tgz; each record names its commit), the LRA-size generated set made there by
# the task's own generator (its sha256 checked against the set made here), the runs resumed from what earlier commands
# left (gpu/results.tgz, or /tmp/runs while the machine stays held), trained side by side for at most BUDGET seconds
# (less if every run ends sooner), then stopped with SIGTERM (each writes last.pt and exits 143); store, checkpoints
# and metrics packed into $OUT. Each complete run whose weights are here is then evaluated on a fresh draw of 10,000
# expressions of its own generator (job=redraw, seed 7; skipped where that record exists): the 2,000-example test
# split's draw moves a ListOps accuracy by a point or more, and the weights of a run that cannot be carried back (the
# Transformer's) are gone after the session.
# Runs started with setsid outlive the command while the machine stays held; KEEP names those left running. RUNS are
# trained side by side, or with QUEUE=1 one after the other in one process (KEEP=queue leaves it running); an item
# `experiment:eager` is trained without $EXTRA (a run's id leaves the compile settings out, so either resumes the
# other's checkpoint: `s4_listops s4_listops:eager` falls back to eager if the first fails).
#   COMMIT=<sha> BUDGET=<s> RUNS="transformer_lra_listops s4d_listops" [KEEP="transformer_lra_listops"] \
#       bash gpu/listops_runs.sh
set -u
repo=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
git config --global --add safe.directory '*'
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# gpu/repo.tgz: the .git of a depth-1 clone at COMMIT (10 MB; a bundle of the whole history is 46 MB of the 64 a call
# carries, and a shallow bundle cannot be cloned)
[ -d /tmp/sb ] || { mkdir /tmp/sb && tar -xzf "$repo/gpu/repo.tgz" -C /tmp/sb \
    && (cd /tmp/sb && git reset -q --hard "$COMMIT"); } || exit 1
cd /tmp/sb
echo "commit $(git rev-parse HEAD)"
if [ ! -d /tmp/data/listops ]; then
    t0=$SECONDS
    python3 -c "
import hashlib; from pathlib import Path; from tasks import listops
task = listops.build(listops.ListOpsConfig(), Path('/tmp/data/listops')); d = Path(task.info['dir'])
print({f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12] for f in sorted(d.glob('*.tsv'))})" || exit 1
    echo "data ready in $((SECONDS - t0)) s"
fi
mkdir -p /tmp/runs
[ -f "$repo/gpu/results.tgz" ] && [ ! -f /tmp/runs/.unpacked ] && tar -xzf "$repo/gpu/results.tgz" -C /tmp/runs \
    && touch /tmp/runs/.unpacked
cmd() {  # the training command of one item of RUNS: `experiment` (with $EXTRA) or `experiment:eager` (without)
    local exp=${1%%:*} extra=${EXTRA:-}
    [ "$1" != "$exp" ] && extra=
    echo "python3 run.py +experiment=$exp sweep=listops-paper paths.root=/tmp/runs paths.data=/tmp/data $extra" \
        ">> /tmp/runs/$exp.log 2>&1"
}
running() { pgrep -f "experiment=$1 " > /dev/null; }
if [ "${QUEUE:-0}" = 1 ]; then  # one after the other in one process; a run that fails hands on to the next item
    if pgrep -f /tmp/runs/queue.sh > /dev/null; then echo "queue: still running"; else
        for item in $RUNS; do echo "$(cmd "$item"); [ \$? = 143 ] && exit 143"; done > /tmp/runs/queue.sh
        setsid bash /tmp/runs/queue.sh &
    fi
else
    for item in $RUNS; do
        if running "${item%%:*}"; then echo "${item%%:*}: still running"; else setsid bash -c "exec $(cmd "$item")" & fi
    done
fi
deadline=$((SECONDS + BUDGET))  # wait for BUDGET seconds, or less if every run has ended
while [ $SECONDS -lt $deadline ]; do
    alive=0; pgrep -f /tmp/runs/queue.sh > /dev/null && alive=1
    for item in $RUNS; do running "${item%%:*}" && alive=1; done
    [ $alive = 0 ] && break; sleep 5
done
stopped=0
case " ${KEEP:-} " in *" queue "*) ;; *) pkill -TERM -f /tmp/runs/queue.sh ;; esac  # before its run, or it starts the next
for exp in $(for item in $RUNS; do echo "${item%%:*}"; done | sort -u); do
    case " ${KEEP:-} " in *" $exp "* | *" queue "*) continue ;; esac
    pkill -TERM -f "experiment=$exp " && echo "$exp: stopped" && stopped=1
done
[ $stopped = 1 ] && sleep 20  # the stopped runs write their checkpoints
for rid in $(python3 - <<'PY'
import json, pathlib  # complete training runs with the weights their test scored
for rec in sorted(pathlib.Path("/tmp/runs/store").glob("*.json")):
    r = json.loads(rec.read_text())
    run = pathlib.Path("/tmp/runs/runs") / rec.stem
    if r.get("kind", "train") == "train" and r["status"] == "complete" and any(
            (run / f).exists() for f in ("best.pt", "final.pt", "last.pt")):
        print(rec.stem)
PY
); do
    python3 run.py job=redraw "eval.runs=[$rid]" eval.seed=7 eval.n_test=10000 paths.root=/tmp/runs \
        paths.data=/tmp/data 2>&1 | grep -v "^W\|warn" | tail -2
done
python3 - <<'PY'
import json, pathlib
for rec in pathlib.Path("/tmp/runs/store").glob("*.json"):  # a finished run needs no checkpoint any more
    if json.loads(rec.read_text())["status"] == "complete":
        (pathlib.Path("/tmp/runs/runs") / rec.stem / "last.pt").unlink(missing_ok=True)
PY
python3 - <<'PY'  # what comes back: records, metrics, logs, and checkpoints small enough to carry (< 14 MB)
import os, pathlib, tarfile
root = pathlib.Path("/tmp/runs")
with tarfile.open(os.environ["OUT"] + "/results.tgz", "w:gz") as tar:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in ("cache", "reports"):  # compile caches; the reports job=redraw left
            continue
        if path.stat().st_size < 14e6:
            tar.add(path, str(rel))
        else:
            print(f"not carried: {rel} ({path.stat().st_size / 1e6:.0f} MB)")
PY
for exp in $(for item in $RUNS; do echo "${item%%:*}"; done | sort -u); do
    echo "== $exp"; tr '\r' '\n' < /tmp/runs/$exp.log 2>/dev/null | grep -v '^\s*$' | tail -3 | cut -c1-200
done
ls -la /tmp/runs/store; du -sh /tmp/runs/runs/* 2>/dev/null
