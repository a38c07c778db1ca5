"""`python -m sweeps status|collect [SWEEP_DIR]`: a sweep's state and results (sweeps/status.py)."""

import sys

from sweeps.status import main

sys.exit(main())
