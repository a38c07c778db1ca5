"""Run identity: the same resolved config, run by the same versions of its code, always gets the same run id."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from harness import versions
from harness.config import NON_SEMANTIC_KEYS


def _drop(tree: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in tree:
        return
    if rest:
        if isinstance(tree[head], dict):
            _drop(tree[head], rest)
    else:
        del tree[head]


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that do not change results (paths, launcher, logging)."""
    tree = json.loads(json.dumps(config, default=str))
    for key in NON_SEMANTIC_KEYS:
        _drop(tree, key)
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
