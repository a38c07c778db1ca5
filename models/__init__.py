"""The model zoo. One file per model; each registers its config dataclass and builder."""

from harness.registry import MODELS

__all__ = ["MODELS"]
