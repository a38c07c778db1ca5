#!/usr/bin/env bash
# First command of a session: the train-step study (part 1 of gpu/train_step.sh, shortened), then the paper-scale
# ListOps runs started in the background (setsid: they outlive this command while the machine stays held), and
# their state so far packed into $OUT at the end (gpu/listops_runs.sh continues them in the next command).
#   COMMIT=<sha> BEFORE_COMMIT=<sha> RUNS="s4d_listops multires_listops" bash gpu/session.sh
set -u
repo=$(pwd)
T0=$SECONDS
export PART=0
source gpu/train_step.sh  # defines study(), installs the wheels, prepares the trees
study /tmp/after after_eager 170 --presets $LISTOPS,multires_scifar --modes eager $published
study /tmp/before before_eager 60 --presets multires_listops,s4d_listops,transformer_lra_listops --modes eager
study /tmp/after after_bf16 35 --presets multires_listops,s4d_listops --modes eager train.precision=bf16
study /tmp/before before_bf16 35 --presets multires_listops,s4d_listops --modes eager train.precision=bf16
study /tmp/after after_compiled 150 --presets multires_listops,s4d_listops --modes compiled,graphs
tar -czf "$OUT/store_study.tgz" -C "$root" store
(cd /tmp/after && python3 -c "
import json, pathlib
from reports.train_step import table
print(table([json.loads(p.read_text()) for p in pathlib.Path('$root/store').glob('*.json')]))") > "$OUT/table.md" 2>&1
cat "$OUT/table.md"
cd "$repo"
budget=$((540 - (SECONDS - T0)))
BUDGET=$((budget > 10 ? budget : 10)) KEEP="$RUNS" bash gpu/listops_runs.sh
