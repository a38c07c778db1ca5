"""Registries for tasks and models.

A task or model is one file that defines a config dataclass and a builder, and registers both:

    @dataclass
    class MyModelConfig(ModelConfig):
        name: str = "mymodel"
        d_model: int = 128

    @MODELS.register("mymodel", MyModelConfig)
    def build(cfg: MyModelConfig, spec: TaskSpec) -> nn.Module: ...

Registering also stores the dataclass in Hydra's ConfigStore (group ``model`` or ``task``), so
``python run.py model=mymodel model.d_model=64`` works with no further wiring. The packages
``models`` and ``tasks`` import every module they contain, so adding the file is enough.

A builder always receives an instance of its dataclass: `build` turns the DictConfig Hydra composes into one,
so the dataclass's `__post_init__` checks run on every path (training, sweeps, the benchmark, tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from harness.config import check_keys
from harness.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    config_cls: type
    builder: Callable[..., Any]
    doc: str

    def options(self) -> list[tuple[str, str, Any]]:
        """(field, type, default) for every config field, for `python -m harness list`."""
        rows = []
        for f in dataclasses.fields(self.config_cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = "???"
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            rows.append((f.name, type_name, default))
        return rows


class Registry:
    """Name -> (config dataclass, builder). One registry per kind (tasks, models)."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str, config_cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"{self.kind} {name!r}: config must be a dataclass, got {config_cls!r}")

        def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].builder is not builder:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (builder.__doc__ or config_cls.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, config_cls, builder, doc[0] if doc else "")
            ConfigStore.instance().store(group=self.kind, name=name, node=config_cls)
            return builder

        return wrap

    def discover(self) -> None:
        """Import every module of the package so that each registers itself."""
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        self.discover()
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}. "
                f"See `python -m harness list`."
            )
        return self._entries[name]

    def config(self, name: str, /, **overrides: Any) -> Any:
        """A config dataclass instance for `name`, with field overrides (checked by its `__post_init__`)."""
        cls = self.get(name).config_cls
        try:
            check_keys(overrides, cls, f"{self.kind}.")
        except ConfigError as exc:
            raise ConfigError(f"{self.kind} {name!r}: {exc}") from None
        return cls(**overrides)

    def from_node(self, cfg: Any) -> Any:
        """A config as its entry's dataclass: a DictConfig (as Hydra composes it) is converted, so that the
        dataclass's __post_init__ checks its values as it does for a config made directly."""
        if not isinstance(cfg, DictConfig):
            return cfg
        fields = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(fields, dict)
        return self.config(cfg.name, **{str(k): v for k, v in fields.items()})

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Build from a config (dataclass or DictConfig) whose `name` field names the entry; the builder always
        gets the dataclass it declares (`from_node`)."""
        entry = self.get(cfg.name)
        return entry.builder(self.from_node(cfg), *args, **kwargs)


TASKS = Registry("task", "tasks")
MODELS = Registry("model", "models")
SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"  # the config tree run.py composes from


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `run.py` composes for these overrides, for code outside a Hydra app (tests, studies, reports)."""
    from hydra import compose, initialize_config_dir

    TASKS.discover()
    MODELS.discover()
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        return compose("config", overrides=list(overrides))
