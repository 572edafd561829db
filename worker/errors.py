"""Carillon's error tree; every error the engine raises on purpose is one of these.

CarillonError
├── ConfigError            bad CARILLON_* environment variable
├── DefinitionError        a workflow definition is invalid (names the activity)
│   ├── FilterError        a filter of the DSL is malformed or unsafe
│   └── ScheduleError      a scheduler or wait option is malformed
├── NotFound               no such organization, workflow, activity or task
├── CommandRefused         a command does not apply to the current state (HTTP 409)
├── TriggerRefused         a signal trigger is invalid (HTTP 400) or not accepted now
│   └── TooManyTriggers    a second trigger inside the minimum interval (HTTP 429)
└── ActivityError          an activity failed for an expected reason (file not found...)
"""

from __future__ import annotations

from typing import Any


class CarillonError(Exception):
    """Base of every error raised on purpose by Carillon."""

    code = "carillonError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigError(CarillonError):
    """Raised when a CARILLON_* environment variable has an unusable value."""

    code = "configError"


class DefinitionError(CarillonError):
    """Raised when a workflow definition is invalid; the message names the activity."""

    code = "invalidDefinition"

    def __init__(
        self, message: str, *, activity: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if activity is not None:
            merged.setdefault("activity", activity)
            message = f"activity '{activity}': {message}"
        super().__init__(message, details=merged)
        self.activity = activity


class FilterError(DefinitionError):
    """Raised when a filter of the DSL is malformed, too deep, too big or uses an unknown op."""

    code = "invalidFilter"


class ScheduleError(DefinitionError):
    """Raised when a scheduler frequency, a wait duration or an expiry is malformed."""

    code = "invalidSchedule"


class NotFound(CarillonError):
    """Raised when an organization, workflow, activity or task does not exist (or is not yours)."""

    code = "notFound"


class CommandRefused(CarillonError):
    """Raised when an execution command does not apply to the workflow's current state."""

    code = "commandRefused"


class TriggerRefused(CarillonError):
    """Raised when a signal trigger is malformed or its workflow cannot take it."""

    code = "triggerRefused"

    def __init__(
        self, message: str, *, status: int = 400, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.status = status


class TooManyTriggers(TriggerRefused):
    """Raised when a signal is triggered again inside CARILLON_SIGNAL_MIN_INTERVAL."""

    code = "tooManyTriggers"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, status=429, details={"retryAfter": retry_after})
        self.retry_after = retry_after


class ActivityError(CarillonError):
    """Raised by an activity that failed for an expected reason; the error policy applies."""

    code = "activityError"
