#!/usr/bin/env bash
# A session's commands for the ListOps runs and the train-step check, chained on one held machine (each within
# 30 s of the last). PART=1 and 2: S4D resumed alone, eager, kept running across the commands (it needs about
# 19 minutes). PART=3: waits for S4D to end if it has not, then the Triton copy-in prototype (gpu/pack_proto.py),
# the train-step study of COMMIT (multires_listops eager and CUDA graphs with the published step beside;
# s4d_listops eager), then MultiresNet resumed with CUDA graphs (its run id leaves the compile settings out, and
# pad_to_max gives it one batch shape) for the rest of the command, stopped and packed.
#   COMMIT=<sha> PART=1|2|3 [TOTAL=570] bash gpu/session5.sh
set -u
repo=$(pwd)
T0=$SECONDS
left() { echo $((${TOTAL:-570} - (SECONDS - T0))); }
BUDGET=$(($(left) - 45)) RUNS=s4d_listops KEEP=s4d_listops bash gpu/listops_runs.sh
[ "$PART" = 3 ] || exit 0
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1  # the wheels listops_runs.sh installed
[ -d /tmp/after ] || { git clone -q "$repo/gpu/repo.bundle" /tmp/after && (cd /tmp/after && git checkout -q "$COMMIT"); }
(cd /tmp/after && timeout 60 python3 "$repo/gpu/pack_proto.py") > "$OUT/pack_proto.log" 2>&1
cat "$OUT/pack_proto.log"
(cd /tmp/after && timeout 150 python3 -m sweeps.studies.train_step --presets multires_listops --modes eager,graphs \
    --multires-conv "$repo/gpu/published/multires-conv" paths.root=/tmp/train_step_results bench.repeats=20 \
    bench.warmup=5) > "$OUT/study_multires.log" 2>&1
(cd /tmp/after && timeout 40 python3 -m sweeps.studies.train_step --presets s4d_listops --modes eager \
    paths.root=/tmp/train_step_results bench.repeats=20 bench.warmup=5) > "$OUT/study_s4d.log" 2>&1
tar -czf "$OUT/store_study.tgz" -C /tmp/train_step_results store
grep -hE "^seqbench: (bench [a-z]|train_step)" "$OUT"/study_*.log | grep -v ceilings | cut -c1-150
BUDGET=$(($(left) - 45)) RUNS=multires_listops KEEP= EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    bash gpu/listops_runs.sh
