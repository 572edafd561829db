"""A recorder of the SQL statements a block sends, for tests that count round trips."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event


class Statements:
    """Counts the statements a block sends (pings and commits are not statements)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sent: list[str] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.sent.append(statement)
