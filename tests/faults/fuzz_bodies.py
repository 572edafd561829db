"""F16 atheris target: the API's JSON body parser, then the trigger parameter validator.

    python tests/faults/fuzz_bodies.py [corpus dir] -max_total_time=60 -rss_limit_mb=1024

Any input may be refused, with api.errors.ApiError (the parser: a 400) or
worker.errors.TriggerRefused (the validator: a 400 naming the parameter); any other
exception, or a typed value that is not JSON, is a bug, and atheris stops on it.
"""

from __future__ import annotations

import json
import sys

import atheris

# Flask and SQLAlchemy come in uninstrumented (slow to instrument, not under test).
from api.errors import ApiError
from worker.errors import TriggerRefused

with atheris.instrument_imports(include=["api.bodies", "worker.signals"]):
    from api.bodies import parse_json
    from worker.signals import coerce

#: The declaration of the tests' signal: one parameter of each type.
DECLARED = {"n": "number", "flag": "boolean", "when": "datetime", "s": "string"}


def one_input(data: bytes) -> None:
    try:
        body = parse_json(data)
    except ApiError as refused:
        assert refused.status == 400, refused.status
        return
    parameters = body.get("parameters") if isinstance(body, dict) else body
    try:
        values = coerce(DECLARED, parameters)
    except TriggerRefused:
        return
    # Accepted values become a job's vars: JSON without NaN or Infinity
    json.dumps(values, allow_nan=False)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
