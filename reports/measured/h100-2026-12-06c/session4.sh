#!/usr/bin/env bash
# First command of a session: the Triton pair copies timed against torch's (gpu/pair_copy_bench.py), the train-step
# study of COMMIT and BEFORE_COMMIT (multires_listops eager and CUDA graphs, the published step beside; s4d_listops
# eager), then the paper-scale ListOps runs resumed in the background (gpu/listops_runs.sh; KEEP: they outlive this
# command while the machine stays held).
#   COMMIT=<sha> BEFORE_COMMIT=<sha> RUNS="s4d_listops" [TOTAL=570] bash gpu/session4.sh
set -u
repo=$(pwd)
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
git config --global --add safe.directory '*'
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for side in after:$COMMIT before:$BEFORE_COMMIT; do
    [ -d /tmp/${side%%:*} ] || { git clone -q "$repo/gpu/repo.bundle" /tmp/${side%%:*} \
        && (cd /tmp/${side%%:*} && git checkout -q "${side#*:}"); } || exit 1
done
root=/tmp/train_step_results
study() {  # tree, name, budget seconds, arguments...
    local tree=$1 name=$2 budget=$3; shift 3
    local t0=$SECONDS
    (cd "$tree" && timeout "$budget" python3 -m sweeps.studies.train_step "$@" paths.root="$root" \
        bench.repeats=20 bench.warmup=5) > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s"
    grep -E "^seqbench: (bench [a-z]|train_step)" "$OUT/$name.log" | grep -v ceilings | cut -c1-150
}
(cd /tmp/after && PYTHONPATH=/tmp/after:/tmp/site timeout 120 python3 "$repo/gpu/pair_copy_bench.py") 2>&1 \
    | tee "$OUT/pair_copy_bench.log"
study /tmp/after after_multires 100 --presets multires_listops --modes eager,graphs \
    --multires-conv "$repo/gpu/published/multires-conv"
study /tmp/before before_multires 80 --presets multires_listops --modes eager,graphs
study /tmp/after after_s4d 40 --presets s4d_listops --modes eager
study /tmp/before before_s4d 40 --presets s4d_listops --modes eager
tar -czf "$OUT/store_study.tgz" -C "$root" store
(cd /tmp/after && python3 -c "
import json, pathlib
from reports.train_step import table
print(table([json.loads(p.read_text()) for p in pathlib.Path('$root/store').glob('*.json')]))") > "$OUT/table.md" 2>&1
cat "$OUT/table.md"
cd "$repo"
budget=$((${TOTAL:-570} - (SECONDS - T0)))
BUDGET=$((budget > 10 ? budget : 10)) KEEP="${KEEP-$RUNS}" bash gpu/listops_runs.sh
