#!/usr/bin/env bash
# The train-step study on a lent GPU machine, from clean clones of gpu/repo.bundle (so each record names its commit):
# "after" = the code at COMMIT; "before" = the same code with models/ as at BEFORE_COMMIT (the models before this
# round's speed work; the harness, the study and AdamW's foreach default on CUDA are the same on both sides). The
# published MultiresNet (gpu/published/multires-conv, thjashin/multires-conv 828089f) runs beside ours in the study.
#   COMMIT=<sha> BEFORE_COMMIT=<sha> PART=1|2 bash gpu/train_step.sh
set -u
repo=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
git config --global --add safe.directory '*'
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
prep() {  # folder, commit of the code, commit of models/ (optional)
    [ -d "$1" ] && return 0
    git clone -q "$repo/gpu/repo.bundle" "$1" && (cd "$1" && git checkout -q "$2" && if [ -n "${3:-}" ]; then
        git checkout -q "$3" -- models/ && git -c user.name=study -c user.email=study@localhost commit -qm \
        "models/ of $3"; fi) || exit 1
}
prep /tmp/after "$COMMIT"
prep /tmp/before "$COMMIT" "$BEFORE_COMMIT"
root=/tmp/train_step_results
LISTOPS=multires_listops,s4d_listops,s4_listops,sgconv_listops,transformer_lra_listops,wavspa_ada_listops
study() {  # tree, name, budget seconds, arguments...
    local tree=$1 name=$2 budget=$3; shift 3
    local t0=$SECONDS
    (cd "$tree" && timeout "$budget" python3 -m sweeps.studies.train_step "$@" paths.root="$root" \
        bench.repeats=20 bench.warmup=5) > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s"
    grep -E "^seqbench: (bench [a-z]|train_step)" "$OUT/$name.log" | grep -v ceilings | cut -c1-150
}
published="--multires-conv $repo/gpu/published/multires-conv"
if [ "$PART" = 0 ]; then
    :  # sourced by gpu/session.sh, which runs its own studies
elif [ "$PART" = 1 ]; then
    study /tmp/after after_eager 190 --presets $LISTOPS,multires_scifar --modes eager $published
    study /tmp/before before_eager 70 --presets multires_listops,s4d_listops,transformer_lra_listops --modes eager
    study /tmp/after after_bf16 40 --presets multires_listops,s4d_listops --modes eager train.precision=bf16
    study /tmp/before before_bf16 40 --presets multires_listops,s4d_listops --modes eager train.precision=bf16
    study /tmp/after after_compiled_1 200 --presets multires_listops,s4d_listops --modes compiled,graphs
else
    study /tmp/after after_compiled_2 420 --presets transformer_lra_listops,s4_listops,sgconv_listops,wavspa_ada_listops,multires_scifar --modes compiled
fi
[ "$PART" = 0 ] && return 0
tar -czf "$OUT/store_part$PART.tgz" -C "$root" store
(cd /tmp/after && python3 -c "
import json, pathlib, sys
from reports.train_step import table
records = [json.loads(p.read_text()) for p in pathlib.Path('$root/store').glob('*.json')]
print(table(records))") > "$OUT/table_part$PART.md" 2>&1
cat "$OUT/table_part$PART.md"
