"""The sweep runner, beside the Hydra configs it runs (`config.yaml`, `experiment/`, `hydra/`).

- `sweeper.py`: the validating sweeper: every point composed and checked before any runs, zipped keys, options
  of several models, points already complete skipped.
- `slurm.py`: the SLURM launcher (hydra-submitit-launcher) with requeue after preemption or a time limit.
- `manifest.py`: what a sweep leaves in its folder (its points, their run ids, job ids).
- `status.py`: `python -m sweeps status|collect`, a sweep's state and results later.
- `hydra_plugins.py`: the one registration of the sweeper and launcher with Hydra.
- `cluster/slurm_local.sh`: a one-node SLURM cluster on localhost, for trying the SLURM path and for the tests.
- `studies/`: short scripts that measure something once (the published code beside ours, the memory estimate).

One run is the harness's (harness/runner.py); this package only decides which runs to make, where and when.
"""
