#!/usr/bin/env bash
# The next session's commands for the MultiresNet ListOps run, chained on one held machine (each within 30 s of the
# last): resumed with CUDA graphs (its run id leaves the compile settings out; pad_to_max gives it one batch shape),
# started with setsid and left running between the commands, so that it compiles once; each command packs what the
# run has written so far (last.pt at each epoch's end), the one with STOP=1 stops it and packs its last checkpoint.
# About 152,000 steps were left at 18-19 ms each with the evaluations: about 49 minutes, two sessions.
#   tar -czf gpu/results.tgz -C reports/measured/h100-2026-12-07b/listops store runs && COMMIT=<sha> bash gpu/session7.sh
#   COMMIT=<sha> bash gpu/session7.sh            # within 30 s
#   COMMIT=<sha> STOP=1 bash gpu/session7.sh     # within 30 s, the last command the session's device time allows
set -u
keep=multires_listops
[ "${STOP:-0}" = 1 ] && keep=
BUDGET=${BUDGET:-525} RUNS=multires_listops KEEP=$keep EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    bash gpu/listops_runs.sh
