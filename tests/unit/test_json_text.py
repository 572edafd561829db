"""worker.db.json_text, the JSON columns' serializer: the text json.dumps writes, always (the
seeded hop's fence compares stored JSON text with it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.db import json_text, make_engine


@pytest.mark.parametrize(
    "value",
    [None, {}, [], "", 0, False, {"a": 1}, ["x"], {"é": "ü", "n": [1, 2.5, None]}, {"": {}}],
)
def test_json_text_is_what_json_dumps_writes(value: Any) -> None:
    assert json_text(value) == json.dumps(value)


def test_engines_write_json_columns_with_it(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        assert engine.dialect._json_serializer is json_text
    finally:
        engine.dispose()
