#!/usr/bin/env bash
# A session's commands for the ListOps runs, chained on one held machine (each within 30 s of the last).
# PART=1: the Transformer alone, eager, started with setsid and kept running across the commands (5,000 steps at about
# 171 ms: about 15 minutes; its 140 MB checkpoint cannot be carried, so it must end inside this session).
# PART=2: waits for it to end (or for the command's time), then MultiresNet resumed with CUDA graphs (its run id leaves
# the compile settings out, and pad_to_max gives it one batch shape) for the rest of the command, stopped and packed.
#   COMMIT=<sha> PART=1|2 [TOTAL=570] bash gpu/session6.sh
set -u
T0=$SECONDS
left() { echo $((${TOTAL:-570} - (SECONDS - T0))); }
BUDGET=$(($(left) - 45)) RUNS=transformer_lra_listops KEEP=transformer_lra_listops bash gpu/listops_runs.sh
[ "$PART" = 2 ] || exit 0
[ "$(left)" -gt 150 ] || { echo "no time left for MultiresNet in this command"; exit 0; }
BUDGET=$(($(left) - 45)) RUNS=multires_listops KEEP= EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    bash gpu/listops_runs.sh
