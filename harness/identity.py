"""Run identity: the same resolved config, run by the same versions of its code, always gets the same run id.

The config is taken as it acts, not as it was written: keys that change nothing are dropped (paths, launcher,
logging: harness.config.NON_SEMANTIC_KEYS), and a model config may say which of its values are the same model
written another way. It does so with a method

    def canonical(self, spec: TaskSpec) -> Self: ...

that returns the config with such values in one form (MultiresNet: `memory_size` under the fading tree, which
ignores it, and a `depth` equal to the automatic one, both as null). The task's spec (harness.task.TaskSpec,
computed from the task's config alone) is passed because what a value means can depend on the task, e.g. the
automatic depth on the sequence length. A task config may have `canonical(self) -> Self` likewise. So an ablation
axis that passes through the baseline (`model.depth=2,...,10` on sCIFAR) reuses the baseline's run and record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from typing import Any

from harness import versions
from harness.config import NON_SEMANTIC_KEYS
from harness.registry import MODELS, TASKS


def _drop(tree: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in tree:
        return
    if rest:
        if isinstance(tree[head], dict):
            _drop(tree[head], rest)
    else:
        del tree[head]


def _task_spec(task: Any) -> Any:
    """The task's spec from its config alone (the task module's `task_spec`), or None where it has none."""
    module = sys.modules[TASKS.get(task.name).builder.__module__]
    from_config = getattr(module, "task_spec", None)
    return from_config(task) if callable(from_config) else None


def _changed(node: dict[str, Any], before: Any, after: Any) -> None:
    """Set in `node` (a config section as written) the fields `after` holds in another form than `before`."""
    for f in dataclasses.fields(after):
        value = getattr(after, f.name)
        if value != getattr(before, f.name):
            node[f.name] = value


def canonicalise(tree: dict[str, Any]) -> None:
    """Rewrite, in place, the task's and model's values that have a canonical form (see the module docstring).

    Only fields the hooks change are touched, so a partial config (an old record) stays partial. A config that
    cannot be built (an unregistered name, an option a later version dropped) is left as it is: it is not a
    config this code would run, and its old id is the right one.
    """
    task_node, model_node = tree.get("task"), tree.get("model")
    if not isinstance(task_node, dict) or not isinstance(model_node, dict):
        return
    try:
        task = TASKS.config(task_node["name"], **{k: v for k, v in task_node.items() if k != "name"})
        model = MODELS.config(model_node["name"], **{k: v for k, v in model_node.items() if k != "name"})
        if hasattr(task, "canonical"):
            _changed(task_node, task, task.canonical())
        if hasattr(model, "canonical"):
            spec = _task_spec(task)
            if spec is not None:
                _changed(model_node, model, model.canonical(spec))
    except Exception:  # any failure to build means: not a config this code runs
        return


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that do not change results (paths, launcher, logging), its task and model values
    in their canonical form."""
    tree = json.loads(json.dumps(config, default=str))
    for key in NON_SEMANTIC_KEYS:
        _drop(tree, key)
    canonicalise(tree)
    return tree


def run_id(config: dict[str, Any]) -> str:
    """`<task>-<model>-<12 hex digits of the hash of the semantic config and the code versions>`.

    The versions of the model, task and harness (harness.versions) are hashed with the config, so a version bump
    gives every affected run a new id and a rerun sweep reruns those points; records written before versions
    existed keep their ids and stay readable.
    """
    tree = {**semantic_config(config), "versions": versions.of_config(config)}
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]
    task = (config.get("task") or {}).get("name", "none")
    model = (config.get("model") or {}).get("name", "none")
    return f"{task}-{model}-{digest}"
