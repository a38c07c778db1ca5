#!/usr/bin/env bash
# One command of paper-scale ListOps runs on a lent GPU machine (10 minutes a command, 30 a session): a clean clone
# of gpu/repo.bundle at COMMIT (each record names its commit), the LRA-size generated set made there by the task's
# own generator (its sha256 checked against the set made here), the runs resumed from what earlier commands left
# (gpu/results.tgz, or /tmp/runs while the machine stays held), trained side by side for at most BUDGET seconds
# (less if every run ends sooner), then stopped with SIGTERM (each writes last.pt and exits 143); store,
# checkpoints and metrics packed into $OUT. Each complete run whose weights are here is then evaluated on a fresh draw
# of 10,000 expressions of its own generator (job=redraw, seed 7; skipped where that record exists): the 2,000-example
# test split's draw moves a ListOps accuracy by a point or more, and the weights of a run that cannot be carried back
# (the Transformer's) are gone after the session.
# Runs started with setsid outlive the command while the machine stays held; KEEP names those left running.
#   COMMIT=<sha> BUDGET=<s> RUNS="transformer_lra_listops s4d_listops" [KEEP="transformer_lra_listops"] \
#       bash gpu/listops_runs.sh
set -u
repo=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
git config --global --add safe.directory '*'
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d /tmp/sb ] || { git clone -q "$repo/gpu/repo.bundle" /tmp/sb && (cd /tmp/sb && git checkout -q "$COMMIT"); } || exit 1
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
for exp in $RUNS; do
    if pgrep -f "experiment=$exp " > /dev/null; then echo "$exp: still running"; continue; fi
    setsid bash -c "exec python3 run.py +experiment=$exp sweep=listops-paper paths.root=/tmp/runs paths.data=/tmp/data \
        ${EXTRA:-} >> /tmp/runs/$exp.log 2>&1" &
done
deadline=$((SECONDS + BUDGET))  # wait for BUDGET seconds, or less if every run has ended
while [ $SECONDS -lt $deadline ]; do
    alive=0; for exp in $RUNS; do pgrep -f "experiment=$exp " > /dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 5
done
stopped=0
for exp in $RUNS; do
    case " ${KEEP:-} " in *" $exp "*) continue ;; esac
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
for exp in $RUNS; do echo "== $exp"; tr '\r' '\n' < /tmp/runs/$exp.log | grep -v '^\s*$' | tail -3 | cut -c1-200; done
ls -la /tmp/runs/store; du -sh /tmp/runs/runs/* 2>/dev/null
