#!/usr/bin/env bash
# The next session's commands, chained on one held machine (each within 30 s of the last). With PROBE=1 (the first
# command) it first measures where the wavspa_ada_listops step's time goes (`../h100-2026-12-07d/wavspa_probe.py`,
# then the train-step study of that preset: eager, compiled, and eager through our Triton attention), its output in
# $OUT/wavspa/, before any training shares the GPU; the rest of the command's budget then resumes SGConv in the
# background with CUDA graphs (the `:eager` item resumes it without graphs if they fail). The one with STOP=1 stops
# the queue and its run, which writes its checkpoint.
#   tar -czf gpu/results.tgz -C reports/measured/h100-2026-12-07e/listops store runs && \
#       COMMIT=<sha> PROBE=1 bash gpu/session10.sh
#   COMMIT=<sha> bash gpu/session10.sh                       # within 30 s
#   COMMIT=<sha> STOP=1 BUDGET=<s> bash gpu/session10.sh     # the last command the session's device time allows
set -u
budget=${BUDGET:-525}
if [ "${PROBE:-0}" = 1 ]; then
    t0=$SECONDS
    mkdir -p "$OUT/wavspa"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    probe() {  # name, seconds, command...: a part that overruns is cut off, and the next part still runs
        local name=$1 limit=$2; shift 2
        echo "== $name"
        PYTHONPATH=/tmp/site:. timeout "$limit" "$@" > "$OUT/wavspa/$name.log" 2>&1
        echo "exit $?"; grep -v "^W\|warn" "$OUT/wavspa/$name.log" | tail -40 | cut -c1-160
    }
    probe probe 150 python3 reports/measured/h100-2026-12-07d/wavspa_probe.py
    probe train_step 180 python3 -m sweeps.studies.train_step --presets wavspa_ada_listops --modes eager,compiled \
        paths.root="$OUT/wavspa/train_step"
    probe train_step_flash 90 python3 -m sweeps.studies.train_step --presets wavspa_ada_listops --modes eager \
        model.attention_kernel=flash_tf32 paths.root="$OUT/wavspa/train_step"
    budget=$((budget - (SECONDS - t0)))
    [ $budget -lt 60 ] && budget=60
fi
keep=queue
[ "${STOP:-0}" = 1 ] && keep=
BUDGET=$budget QUEUE=1 KEEP=$keep EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    RUNS="sgconv_listops sgconv_listops:eager" bash gpu/listops_runs.sh
