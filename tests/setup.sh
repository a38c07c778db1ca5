#!/usr/bin/env bash
# What the tests need besides Python packages: Chromium (the HTML report is opened in it) and a
# real single-node SLURM cluster on localhost, with accounting (the sweep integration tests submit to it).
# Needs root (apt-get); on a machine without it, those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/setup.sh: not root: skipping Chromium and SLURM (their tests will be skipped)" >&2
    exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v pdflatex >/dev/null 2>&1; then  # the report's LaTeX is compiled (booktabs, xurl: latex-extra)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        texlive-latex-recommended texlive-latex-extra >/dev/null
fi
bash sweeps/cluster/slurm_local.sh start
