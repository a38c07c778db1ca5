#!/usr/bin/env bash
# The next sessions' commands for the ListOps paper runs still to do, chained on one held machine (each within 30 s
# of the last): one after the other in one process started with setsid and left running between the commands, each
# with CUDA graphs (`train.compile_mode=reduce-overhead`; a run's id leaves the compile settings out, so the runs
# resume what earlier sessions left): S4 to its end (about 47,000 steps: 24 minutes on an H100, and about 3.5 more
# to compile and record graphs), then SGConv. Both keep their published padding (each batch to its longest example),
# so torch records a graph per batch length (S4 did so on an H100 in the session that wrote this); if that fails,
# the `:eager` item resumes the run from its last checkpoint without graphs. Each command packs what the runs have
# written so far (last.pt at each epoch's end); the one with STOP=1 stops the queue and its run, which writes its
# checkpoint.
#   tar -czf gpu/results.tgz -C reports/measured/h100-2026-12-07d/listops store runs && COMMIT=<sha> bash gpu/session9.sh
#   COMMIT=<sha> bash gpu/session9.sh                       # within 30 s
#   COMMIT=<sha> STOP=1 BUDGET=<s> bash gpu/session9.sh     # the last command the session's device time allows
set -u
keep=queue
[ "${STOP:-0}" = 1 ] && keep=
BUDGET=${BUDGET:-525} QUEUE=1 KEEP=$keep EXTRA="train.compile=true train.compile_mode=reduce-overhead" \
    RUNS="s4_listops s4_listops:eager sgconv_listops sgconv_listops:eager" bash gpu/listops_runs.sh
