"""Tasks: datasets in their published formats, preprocessing, and metrics. One file per task."""

from harness.registry import TASKS

__all__ = ["TASKS"]
