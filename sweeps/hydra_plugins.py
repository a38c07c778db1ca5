"""Hand our sweeper and SLURM launcher to Hydra (run.py imports this module before Hydra starts).

Why this is needed: Hydra 1.3 instantiates sweepers and launchers only through its plugin table, and only for class
names under `hydra_plugins.` (the namespace that plugin packages install themselves into); a `_target_` such as
`sweeps.sweeper.Sweeper` is refused. Ours live in the repo, so they are entered in the table under that prefix
followed by their real path: `_target_: hydra_plugins.sweeps.sweeper.Sweeper` (sweeps/hydra/sweeper/seqbench.yaml) and
`hydra_plugins.sweeps.slurm.SlurmLauncher` (sweeps/hydra/launcher/slurm.yaml). Pickles (submitit's) name the
classes by their real module.

Hydra's table is filled by a scan (once per process) that executes every module under `hydra_plugins` again,
replacing the classes they define. A module that subclasses one of them (BasicSweeper, the submitit launcher)
therefore calls `Plugins.instance()` before importing it, or the base class's own `super(Class, self)` calls
would name a class the subclass no longer derives from.
"""

from __future__ import annotations

from hydra.core.plugins import Plugins

from sweeps.slurm import SlurmLauncher
from sweeps.sweeper import Sweeper

PREFIX = "hydra_plugins"

for _plugin in (Sweeper, SlurmLauncher):
    Plugins.instance().class_name_to_class[f"{PREFIX}.{_plugin.__module__}.{_plugin.__name__}"] = _plugin
