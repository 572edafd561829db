"""Activity type registry: type name -> ActivityType, built-ins plus configured modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TypeVar

from worker.activities.base import ActivityType
from worker.errors import ConfigError, DefinitionError

_TYPES: dict[str, ActivityType] = {}
T = TypeVar("T", bound=type[ActivityType])
_loaded = False
BUILTIN_MODULES = (
    "worker.activities.flow",
    "worker.activities.query",
    "worker.activities.targeting",
    "worker.activities.files",
    "worker.activities.loading",
    "worker.activities.validation",
    "worker.activities.delivery",
    "worker.technical.cleanup",
    "worker.technical.indicators",
    "worker.technical.analytics",
    "worker.technical.deliverability",
    "worker.technical.audiences",
    "worker.technical.optouts",
    "worker.technical.forecasting",
    "worker.technical.archive",
    "worker.technical.event_status",
    "worker.technical.abtesting",
    "worker.technical.billing",
    "worker.technical.report",
    "worker.technical.reporting",
)


def register(cls: T) -> T:
    """Class decorator: make `cls` available under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no type name")
    _TYPES[cls.name] = cls()
    return cls


def load(modules: Iterable[str] = ()) -> None:
    """Import the built-in activity modules and any CARILLON_ACTIVITY_MODULES."""
    global _loaded
    if not _loaded:
        for builtin in BUILTIN_MODULES:
            importlib.import_module(builtin)
        _loaded = True
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import activity module {module!r}: {exc}") from exc


def get(name: str, *, activity: str | None = None) -> ActivityType:
    load()
    try:
        return _TYPES[name]
    except KeyError:
        known = ", ".join(sorted(_TYPES))
        raise DefinitionError(
            f"unknown activity type '{name}' (known: {known})", activity=activity
        ) from None


def names() -> list[str]:
    load()
    return sorted(_TYPES)


def data_types() -> list[str]:
    """Type names of the data activities (they count against the running-workflows limit)."""
    load()
    return sorted(name for name, kind in _TYPES.items() if kind.data)
