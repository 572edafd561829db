"""F17 atheris target: the filter DSL compiler (segments, queries) over any JSON.

    python tests/faults/fuzz_filters.py [corpus dir] -max_total_time=60 -rss_limit_mb=1024

A filter may be refused, with worker.errors.FilterError only. One that compiles must carry
no user text into the SQL: every value travels as a bound parameter, so the statement
compiled for PostgreSQL holds no quoted literal but the compiler's own ('UTC'), no
statement separator and no comment; anything else is a bug, and atheris stops on it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys

import atheris

from worker.errors import FilterError

with atheris.instrument_imports(include=["worker.filters", "worker.sqlfilter"]):
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql

    from worker import resources
    from worker.sqlfilter import compile_filter

PROFILE = resources.catalog_for("").get("profile")
DIALECT = postgresql.dialect()
#: Vars a filter may name ($(vars/x) placeholders, `vars.x` fields): hostile text included.
VARS = {"segment": "' OR 1=1 --", "n": 3, "when": "2024-06-01", "list": ["a';", "b"]}
COUNTS = {"query1": 10}
TODAY = dt.date(2024, 6, 15)
#: Quoted literals the compiler itself writes (timezone('UTC', ...)).
OWN_LITERALS = {"'UTC'"}
QUOTED = re.compile(r"'(?:[^']|'')*'")


def one_input(data: bytes) -> None:
    try:
        node = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the API refuses it before a filter is ever compiled
    try:
        condition = compile_filter(node, PROFILE, vars=VARS, counts=COUNTS, today=TODAY)
    except FilterError:
        return
    sql = str(select(PROFILE.key).where(condition).compile(dialect=DIALECT))
    literals = set(QUOTED.findall(sql)) - OWN_LITERALS
    assert not literals, (literals, sql)
    assert ";" not in sql and "--" not in sql and "/*" not in sql, sql


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
