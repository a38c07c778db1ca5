#!/usr/bin/env bash
# The next session's commands, chained on one held machine (each within 30 s of the last). With PROBE=1 (the first
# command) it first measures, before any training shares the GPU, in a clean checkout at COMMIT (so each record names
# its commit; output in $OUT/probe/):
# - the train-step study of multires_listops and s4d_listops, eager and with CUDA graphs, the published MultiresNet
#   step beside ours (gpu/published/multires-conv, thjashin/multires-conv 828089f): issue 24's targets, with the
#   host's time to queue a step (host_ms) and the host's CPU, which no GPU run has recorded yet;
# - where the wavspa_ada_listops step's time goes (`../h100-2026-12-07d/wavspa_probe.py`), then the train-step study
#   of that preset: eager, compiled, and eager through our Triton attention (model.attention_kernel=flash_tf32).
# The rest of the command's budget then resumes SGConv in the background with CUDA graphs (the `:eager` item resumes
# it without graphs if they fail). The one with STOP=1 stops the queue and its run, which writes its checkpoint.
#   tar -czf gpu/results.tgz -C reports/measured/h100-2026-12-07e/listops store runs && \
#       COMMIT=<sha> PROBE=1 bash gpu/session10.sh
#   (PARTS="issue24" runs only the parts it names)
#   COMMIT=<sha> bash gpu/session10.sh                       # within 30 s
#   COMMIT=<sha> STOP=1 BUDGET=<s> bash gpu/session10.sh     # the last command the session's device time allows
set -u
budget=${BUDGET:-525}
if [ "${PROBE:-0}" = 1 ]; then
    t0=$SECONDS
    repo=$(pwd)
    out=$OUT/probe
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    git config --global --add safe.directory '*'
    # the checkout listops_runs.sh would make, made first (it uses it as found)
    [ -d /tmp/sb ] || { mkdir /tmp/sb && tar -xzf gpu/repo.tgz -C /tmp/sb && (cd /tmp/sb && git reset -q --hard "$COMMIT"); }
    probe() {  # name, seconds, command...: a part that overruns is cut off, and the next part still runs
        local name=$1 limit=$2 t=$SECONDS; shift 2
        case " ${PARTS:-issue24 wavspa_probe wavspa_step wavspa_step_flash} " in *" $name "*) ;; *) return ;; esac
        (cd /tmp/sb && PYTHONPATH=/tmp/site:. timeout "$limit" "$@") > "$out/$name.log" 2>&1
        echo "== $name: exit $? after $((SECONDS - t)) s"
        tr '\r' '\n' < "$out/$name.log" | grep -v "^W\|warn\|^\s*$" | tail -30 | cut -c1-170
    }
    steps="python3 -m sweeps.studies.train_step paths.root=$out/train_step bench.repeats=20 bench.warmup=5"
    probe issue24 150 $steps --presets multires_listops,s4d_listops --modes eager,graphs \
        --multires-conv "$repo/gpu/published/multires-conv"
    probe wavspa_probe 120 python3 reports/measured/h100-2026-12-07d/wavspa_probe.py
    probe wavspa_step 150 $steps --presets wavspa_ada_listops --modes eager,compiled
    probe wavspa_step_flash 60 $steps --presets wavspa_ada_listops --modes eager model.attention_kernel=flash_tf32
    budget=$((budget - (SECONDS - t0)))
    [ $budget -lt 30 ] && budget=30
fi
keep=queue
[ "${STOP:-0}" = 1 ] && keep=
BUDGET=$budget QUEUE=1 KEEP=$keep EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    RUNS="sgconv_listops sgconv_listops:eager" bash gpu/listops_runs.sh
