#!/usr/bin/env bash
# One command of a long run on a lent GPU machine that allows 10 minutes a command: resume every listed
# experiment from the checkpoints carried in (gpu/results.tgz), train them side by side on the one GPU for
# at most BUDGET seconds, then stop them with SIGTERM (each writes last.pt and exits 143) and pack the store,
# checkpoints and per-epoch metrics into $OUT/results.tgz for the next command.
#
#   bash reports/measured/h200-2026-12-01/chunk.sh BUDGET_S EXPERIMENT [EXPERIMENT ...]
#
# It runs a clean clone of gpu/repo.bundle (`git bundle create gpu/repo.bundle main`: so each record names its
# commit, not a dirty tree), with the
# LRA-size ListOps generated there by the task's own generator (the default `task=listops` settings).
# COMMIT=<sha> pins the code, so that every command of one run is the same code (and the same run id).
set -u
budget=$1; shift  # seconds of training: on a fresh machine, generating the data takes ~240 s of the 600
repo=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
git config --global --add safe.directory '*'
rm -rf /tmp/sb && git clone -q "$repo/gpu/repo.bundle" /tmp/sb && cd /tmp/sb && git checkout -q "${COMMIT:-HEAD}" || exit 1
echo "commit $(git rev-parse HEAD)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Generate the LRA-size set once, before the runs start (the packed set is over the 64 MiB that can be carried;
# generating takes about two minutes and stays in $repo/data while the machine stays warm).
time python3 -c "from pathlib import Path; from tasks.listops import ListOpsConfig, ensure_generated, settings_of
print(ensure_generated(Path('$repo/data/listops'), settings_of(ListOpsConfig())))" || exit 1
[ -f "$repo/gpu/results.tgz" ] && tar -xzf "$repo/gpu/results.tgz"
export PYTHONUNBUFFERED=1
for exp in "$@"; do
    timeout -s TERM "$budget" python3 run.py "+experiment=$exp" sweep=h200-listops paths.root=results \
        paths.data="$repo/data" > "$OUT/$exp.log" 2>&1 &
done
wait
# A finished run needs no checkpoint any more (and the Transformer's is too large to bring back).
python3 - <<'PY'
import json, pathlib
for rec in pathlib.Path("results/store").glob("*.json"):
    if json.loads(rec.read_text())["status"] == "complete":
        (pathlib.Path("results/runs") / rec.stem / "last.pt").unlink(missing_ok=True)
PY
tar -czf "$OUT/results.tgz" results/store results/runs
for exp in "$@"; do echo "== $exp"; tr '\r' '\n' < "$OUT/$exp.log" | grep -v '^\s*$' | tail -4; done
ls -la results/store results/runs/*
