"""The template sandbox's caps, one by one: render time and output size are bounded."""

from __future__ import annotations

import time

import pytest

from worker.channels import templates
from worker.channels.templates import TemplateError, compile_content

CONTEXT = {"profile": {"firstName": "Ann"}, "vars": {}}


def test_a_render_past_its_deadline_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loop well under the step cap: only the clock can stop it.
    monkeypatch.setattr(templates, "MAX_SECONDS", 0.0)
    source = "{% for a in range(5000) %}{{ a }}{% endfor %}"
    started = time.monotonic()

    with pytest.raises(TemplateError, match="rendering took more than 0 s"):
        compile_content({"text": source}).render(CONTEXT)

    assert time.monotonic() - started < 2


def test_the_same_loop_renders_under_the_normal_deadline() -> None:
    rendered = compile_content({"text": "{% for a in range(5000) %}.{% endfor %}"}).render(CONTEXT)
    assert rendered["text"] == "." * 5000


def test_output_is_capped_at_max_chars_exactly() -> None:
    fits = compile_content({"text": "{{ 'x' * 1000 }}"}, max_chars=1000).render(CONTEXT)
    assert len(fits["text"]) == 1000

    with pytest.raises(TemplateError, match="more than 1,000 characters"):
        compile_content({"text": "{{ 'x' * 1000 }}y"}, max_chars=1000).render(CONTEXT)


def test_output_written_piece_by_piece_is_capped_too() -> None:
    source = "{% for a in range(2000) %}xx{% endfor %}"
    with pytest.raises(TemplateError, match="output of more than 1,000 characters"):
        compile_content({"html": source}, max_chars=1000).render(CONTEXT)
