"""Sandboxed message templates: personalisation, escaping, and hostile templates refused fast."""

from __future__ import annotations

import time
from typing import Any

import pytest

from worker.channels.templates import TemplateError, compile_content

PROFILE = {"profile": {"firstName": "Ann <b>", "city": None}, "vars": {"code": "X1"}}

HOSTILE = [
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ x|attr('__class__') }}", "No filter named 'attr'"),
    ("{{ 'a'|attr('format') }}", "No filter named 'attr'"),
    ("{{ '{0.__class__}'.format(1) }}", "unsafe"),
    ("{{ ''.format }}", "unsafe"),
    ("{{ [''.format_map] }}", "unsafe"),
    ("{{ ''.center(10**9) }}", "unsafe"),
    ("{{ '%0999999999d' % 1 }}", "unsafe"),
    ("{{ range(10**9)|list }}", "range() of more than"),
    ("{{ 'a' * 10**9 }}", "repetition"),
    ("{{ [1] * 10**9 }}", "repetition"),
    ("{{ 2 ** 100000 }}", "exponent"),
    ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", "work"),
    ("{% for a in range(10000) %}{{ 'x' * 90000 }}{% endfor %}", "output of more than"),
    ("{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('a', 60) }}", "value"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
    ("{{ 'a'|replace('a', 'b' * 90000)|replace('b', 'c' * 90000) }}", "value of more than"),
    ("{{ range(10000)|join('x' * 90000) }}", "value of more than"),
    ("{{ namespace(x=1) }}", "undefined"),
    ("{{ lipsum(10**6) }}", "undefined"),
    ("{{ cycler }}", "undefined"),
    ("{% include 'x' %}", "loader"),
    ("{{ self.__dict__ }}", "unsafe"),
    ("{{ dict.__init__ }}", "unsafe"),
    ("{{ profile.get.__self__ }}", "unsafe"),
    ("{{ profile.items }}", "unsafe"),
    (
        "{% set s = 'abcdefghij' * 9000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "work",
    ),
]


@pytest.mark.parametrize(("source", "problem"), HOSTILE)
def test_hostile_templates_are_refused_quickly_without_leaking(source: str, problem: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError) as raised:
        compile_content({"html": source}).render(PROFILE)
    assert time.monotonic() - started < 5
    message = raised.value.message
    assert problem in message
    assert message.startswith("html")  # the field, and its line when Jinja knows it
    # No object repr or address reaches the message
    for leak in ("0x", "<function", "<class", "object at", "built-in", "Traceback"):
        assert leak not in message


def test_profile_vars_and_enrichment_are_rendered_html_escaped_only_in_html() -> None:
    content = compile_content(
        {
            "subject": "Hi {{ profile.firstName }}",
            "html": "<p>{{ profile.firstName|upper }} {{ vars.code }} {{ town }}"
            "{{ profile.city }}</p>",
            "text": "{% for x in range(3) %}{{ loop.index }}{% endfor %} {{ profile.firstName }}",
        }
    )
    out = content.render({**PROFILE, "town": "Lyon"})
    assert out == {
        "subject": "Hi Ann <b>",
        "html": "<p>ANN &lt;B&gt; X1 Lyon</p>",
        "text": "123 Ann <b>",
    }


def test_syntax_errors_name_the_field_and_line() -> None:
    with pytest.raises(TemplateError) as raised:
        compile_content({"subject": "ok", "text": "one\ntwo\n{% if %}"})
    assert raised.value.message.startswith("text, line 3:")
    assert raised.value.details == {"field": "text", "line": 3}


def test_unknown_names_fail_at_render_naming_the_line() -> None:
    content = compile_content({"text": "a\n{{ profile.nope }}"})
    with pytest.raises(TemplateError, match="text, line 2: 'dict object' has no attribute 'nope'"):
        content.render(PROFILE)


@pytest.mark.parametrize(
    "content",
    [
        {"text": 1},
        {"text": None},
        {"": "x"},
        {"a b": "x"},
        {"x" * 33: "x"},
        {"text": "x" * 100_001},
        ["text"],
    ],
)
def test_malformed_content_is_refused(content: Any) -> None:
    with pytest.raises(TemplateError):
        compile_content(content)


def test_objects_in_the_context_reach_templates_as_plain_data() -> None:
    class Secret:
        password = "hunter2"

        def __str__(self) -> str:
            return "secret"

    out = compile_content({"text": "{{ profile.obj }} {{ profile.obj.password is defined }}"})
    assert out.render({"profile": {"obj": Secret()}}) == {"text": "secret False"}


def test_a_thousand_renders_stay_fast() -> None:
    content = compile_content(
        {"subject": "Hi {{ profile.firstName }}", "html": "<p>{{ vars.code }}</p>"}
    )
    started = time.monotonic()
    for _ in range(1000):
        content.render(PROFILE)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("Hi {{ profile.firstName }} of {{ profile['city'] }}", {"firstName", "city"}),
        ("{{ profile.firstName.upper() }}{% if profile.city %}x{% endif %}", {"firstName", "city"}),
        ("{{ vars.x }} {{ town }}", set()),
        ("{% for k in profile %}{{ k }}{% endfor %}", None),
        ("{{ profile|length }}", None),
        ("{{ profile[vars.key] }}", None),
        ("{{ profile.get('city') }}", None),
        ("{{ profile.items() }}", None),
        ("{% set p = profile %}{{ p.email }}", None),
        ("{% macro m(profile) %}{{ profile.a }}{% endmacro %}{{ m(profile) }}", None),
        ("{% with profile = vars %}{{ profile.a }}{% endwith %}", None),
    ],
)
def test_profile_fields_read_by_name_or_none_when_the_whole_profile_is_used(
    source: str, fields: set[str] | None
) -> None:
    compiled = compile_content({"subject": source, "text": "{{ profile.email }}"})
    expected = None if fields is None else frozenset(fields | {"email"})
    assert compiled.profile_fields == expected
