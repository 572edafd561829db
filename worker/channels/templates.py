"""Message personalisation: Jinja2 templates compiled and rendered in a capped sandbox.

RELIABILITY.md 4.8: the sandbox alone is not enough, so on top of Jinja's
`ImmutableSandboxedEnvironment` this module

- renders only plain values (dicts, lists, strings, numbers, booleans, None): no ORM object,
  no callable ever reaches a template;
- keeps a short list of filters (no `attr`, `format`, `center`, `indent`, `batch`, `slice`,
  `pprint`...) and globals (`range` capped, `dict`; no `namespace`, `lipsum`, `cycler`);
- lets templates call only macros, loop helpers and a few read-only methods of str, dict and
  list (`upper`, `split`, `get`...): `''.center(10**9)` is refused, not run;
- refuses string formatting with `%`, and sequence repetition or powers past the caps;
- counts the work of one render (every loop iteration and every call) against a budget and
  a deadline, and the characters written against `max_chars`: a bomb is a TemplateError in
  milliseconds, never a hang or an out-of-memory.

A field is compiled once (at save time for the check, once per run for sending) and rendered
per recipient. Errors name the field and the template line.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import functools
import re
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_eval_context
from jinja2 import TemplateError as JinjaError
from jinja2.compiler import CodeGenerator
from jinja2.filters import FILTERS
from jinja2.runtime import BlockReference, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from worker.errors import ActivityError

#: Largest `range()` a template may build.
MAX_RANGE = 10_000
#: Loop iterations plus calls one render of one field may make.
MAX_STEPS = 200_000
#: Wall time one render of one field may take, in seconds.
MAX_SECONDS = 2.0
#: Nesting of the values handed to a template (profile, vars, ctx).
MAX_DEPTH = 8
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_GUARD = "_carillon_steps"

_FILTERS = [
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "forceescape",
    "groupby",
    "int",
    "items",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
    "urlize",
    "wordcount",
    "join",
]
_STR_METHODS = frozenset(
    [
        "upper",
        "lower",
        "title",
        "capitalize",
        "casefold",
        "swapcase",
        "strip",
        "lstrip",
        "rstrip",
        "startswith",
        "endswith",
        "split",
        "rsplit",
        "splitlines",
        "find",
        "rfind",
        "index",
        "rindex",
        "count",
        "isalpha",
        "isdigit",
        "isalnum",
        "isspace",
        "islower",
        "isupper",
        "istitle",
        "isnumeric",
        "isdecimal",
        "removeprefix",
        "removesuffix",
        "partition",
        "rpartition",
    ]
)
_DICT_METHODS = frozenset({"get", "keys", "values", "items"})
_SEQUENCE_METHODS = frozenset({"index", "count"})


class TemplateError(ActivityError):
    """Raised when a template does not compile, is unsafe, or fails or exceeds a cap when
    rendered; the message names the field and, when known, the line."""

    code = "templateError"

    def __init__(self, message: str, *, field: str = "", line: int | None = None) -> None:
        where = field + (f", line {line}" if line else "")
        super().__init__(
            f"{where}: {message}" if where else message,
            details={"field": field, "line": line} if field else None,
        )
        self.field = field
        self.line = line


class _Budget:
    """The work and output left to one render; exceeding either raises _Exceeded."""

    __slots__ = ("chars", "deadline", "limit", "steps")

    def __init__(self, max_chars: int) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS
        #: Characters of output left; `limit` caps any one value a template builds.
        self.chars = max_chars
        self.limit = max_chars

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _Exceeded(f"too much work (more than {MAX_STEPS:,} loop steps and calls)")
        # Reading the clock costs more than counting: look at it every 256 steps.
        if not self.steps & 0xFF and time.monotonic() > self.deadline:
            raise _Exceeded(f"rendering took more than {MAX_SECONDS:g} s")


class _Exceeded(Exception):
    """A render went past a cap (work, time or size)."""


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "carillon_template_budget", default=None
)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # a template object used outside CompiledContent.render
        raise _Exceeded("templates render only through CompiledContent.render")
    return budget


def _steps(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wraps the iterable of every `{% for %}`: each iteration costs one step."""
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _Exceeded(f"range() of more than {MAX_RANGE:,} numbers")
    return numbers


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


@pass_eval_context
def _checked_replace(
    eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None
) -> Any:
    text, old_s, new_s = str(value), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if count is not None:
        hits = min(hits, max(count, 0))
    _check_chars(len(text) + hits * max(len(new_s) - len(old_s), 0))
    return FILTERS["replace"](eval_ctx, value, old, new, count)


@pass_eval_context
def _checked_join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> Any:
    items = list(value)
    _check_chars(sum(len(str(item)) for item in items) + len(str(d)) * len(items))
    return FILTERS["join"](eval_ctx, items, d, attribute)


def _check_chars(size: int) -> None:
    limit = _budget().limit
    if size > limit:
        raise _Exceeded(f"a value of more than {limit:,} characters")


class _Generator(CodeGenerator):
    """Jinja's code generator, minus printing expressions folded at compile time."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        # A folded `{{ ''.format }}` would print a function's repr (and address) without
        # _finalize seeing it: only literal text is output as a constant.
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return str(super()._output_child_to_const(node, frame, finalize))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with Carillon's caps on work, size and callables."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Jinja's sandbox does not see iteration: route every loop's iterable through
        # _steps, so nested loops over long strings cannot spin for hours.
        for loop in tree.find_all(nodes.For):
            guard = nodes.Call(
                nodes.Name(_GUARD, "load"), [loop.iter], [], None, None, lineno=loop.lineno
            )
            guard.set_environment(self)
            guard.set_lineno(loop.lineno)
            loop.iter = guard
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is unsafe in templates; use ~")
        if operator == "**" and (not isinstance(right, int | float) or abs(right) > 64):
            raise _Exceeded("an exponent above 64")
        if operator == "*":
            size = max(_size(left), _size(right))
            times = right if _size(left) else left
            if size and isinstance(times, int) and size * max(times, 0) > budget.limit:
                raise _Exceeded(f"a repetition of more than {budget.limit:,} items")
            both_ints = isinstance(left, int) and isinstance(right, int)
            if both_ints and abs(left).bit_length() + abs(right).bit_length() > 4096:
                raise _Exceeded("a number of more than 4,096 bits")
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if not _callable_in_template(__obj):
            raise SecurityError(f"calling {_describe(__obj)} is unsafe in templates")
        for value in (*args, *kwargs.values()):
            if isinstance(value, str) and len(value) > budget.limit:
                raise _Exceeded(f"a value of more than {budget.limit:,} characters")
        return super().call(__context, __obj, *args, **kwargs)


def _callable_in_template(obj: Any) -> bool:
    if isinstance(obj, Macro | LoopContext | BlockReference):
        return True
    if obj in (_steps, _range, dict):
        return True
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, LoopContext):
        return name in ("cycle", "changed")
    if isinstance(owner, str):
        return name in _STR_METHODS
    if isinstance(owner, dict):
        return name in _DICT_METHODS
    if isinstance(owner, list | tuple):
        return name in _SEQUENCE_METHODS
    return False


def _describe(obj: Any) -> str:
    """A callable's name for an error message, never its repr (which could show internals)."""
    name = getattr(obj, "__name__", None)
    owner = getattr(obj, "__self__", None)
    if name and owner is not None:
        return f"'{type(owner).__name__}.{name}'"
    return f"'{name}'" if name else "this object"


def _finalize(value: Any) -> Any:
    """What `{{ }}` prints: None as nothing; plain data only, never an object's repr."""
    if value is None:
        return ""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: the name that is missing
    _check_printable(value, 0)
    return value


def _check_printable(value: Any, depth: int) -> None:
    if isinstance(value, str | bool | int | float) or value is None:
        return
    if depth < MAX_DEPTH and isinstance(value, list | tuple):
        for item in value[:MAX_RANGE]:
            _check_printable(item, depth + 1)
        return
    if depth < MAX_DEPTH and isinstance(value, dict):
        for key, item in list(value.items())[:MAX_RANGE]:
            _check_printable(key, depth + 1)
            _check_printable(item, depth + 1)
        return
    raise SecurityError(f"printing a {type(value).__name__} object is unsafe in templates")


@functools.cache
def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        finalize=_finalize,
        auto_reload=False,
        cache_size=0,
        # No constant folding: nothing of a template is evaluated at compile time, and
        # every printed value goes through _finalize.
        optimized=False,
    )
    env.filters = {name: FILTERS[name] for name in _FILTERS}
    env.filters["replace"] = _checked_replace
    env.filters["join"] = _checked_join
    env.globals = {"range": _range, "dict": dict, _GUARD: _steps}
    return env


def _error_line(exc: BaseException, filename: str) -> int | None:
    """The template line where `exc` happened: Jinja rewrites tracebacks to template lines."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    found = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            found = lineno
    return found


def _message(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"unsafe template: {exc}"[:300]
    if isinstance(exc, _Exceeded):
        return f"template too large or too slow: {exc}"
    if isinstance(exc, RecursionError):
        return "template recursion too deep"
    if isinstance(exc, JinjaError):
        return str(getattr(exc, "message", None) or exc)[:300]
    # Python errors raised inside the template (ZeroDivisionError, TypeError...): the
    # type and text, never a traceback or a repr of the objects involved.
    return f"{type(exc).__name__}: {exc}"[:300]


#: Types handed to templates as they are; anything else goes through _plain.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any, depth: int = 0) -> Any:
    """The value as plain JSON-like data, so no object with methods reaches a template."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH and not isinstance(value, bool | int | float | str):
        return None
    if kind is dict:
        # The common case (a profile row): its values are scalars, copied without a call each.
        return {
            (k if type(k) is str else str(k)): (v if type(v) in _SCALARS else _plain(v, depth + 1))
            for k, v in value.items()
        }
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


class CompiledContent:
    """A message's fields compiled; `render` personalises them for one recipient."""

    def __init__(
        self,
        templates: Mapping[str, Any],
        sources: Mapping[str, str],
        max_chars: int,
        profile_fields: frozenset[str] | None = None,
    ):
        self._templates = dict(templates)
        self.sources = dict(sources)
        self.max_chars = max_chars
        #: The profile fields the templates read (`profile.x`, `profile['x']`), or None when
        #: a template uses `profile` otherwise (loops over it, passes it on): then all.
        self.profile_fields = profile_fields

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._templates)

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Each field rendered with `context` (profile, vars, ctx and enrichment columns)."""
        values = _plain(context)
        return {name: self._render(name, values) for name in self._templates}

    def _render(self, name: str, values: dict[str, Any]) -> str:
        template = self._templates[name]
        budget = _Budget(self.max_chars)
        token = _BUDGET.set(budget)
        parts: list[str] = []
        try:
            # What Template.generate does, without copying the values and the globals into
            # a new dict for every field of every recipient: the context reads the globals
            # first and the values over them (the precedence of generate), one merge per
            # field; the template cannot change it (immutable sandbox, `set` is local).
            context = template.new_context({**template.globals, **values}, shared=True)
            try:
                for part in template.root_render_func(context):
                    budget.chars -= len(part)
                    if budget.chars < 0:
                        raise _Exceeded(f"output of more than {self.max_chars:,} characters")
                    parts.append(part)
            except Exception:
                # Re-raised with the traceback rewritten to template lines, as generate does.
                template.environment.handle_exception()
        except Exception as exc:
            raise TemplateError(
                _message(exc), field=name, line=_error_line(exc, _filename(name))
            ) from None
        finally:
            _BUDGET.reset(token)
        return "".join(parts)


def _filename(field: str) -> str:
    return f"<template {field}>"


def compile_content(content: Mapping[str, str], *, max_chars: int = 100_000) -> CompiledContent:
    """Compile each field (subject, html, text, title, body...); `html` alone autoescapes.

    TemplateError names the field and line of a syntax error, an unknown filter, a field
    that is not a string or longer than `max_chars`.
    """
    if not isinstance(content, Mapping):
        raise TemplateError("content must be an object of template strings")
    compiled: dict[str, Any] = {}
    sources: dict[str, str] = {}
    used: set[str] | None = set()
    for name, source in content.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise TemplateError(f"invalid field name {str(name)[:40]!r}")
        if not isinstance(source, str):
            raise TemplateError("must be a string", field=name)
        if len(source) > max_chars:
            raise TemplateError(f"longer than {max_chars:,} characters", field=name)
        env = _environment(name == "html")
        try:
            tree = env.parse(source, name=name, filename=_filename(name))
            fields = profile_fields(tree)
            used = None if used is None or fields is None else used | fields
            code = env.compile(tree, name=name, filename=_filename(name))
            # A plain dict of the globals, not Jinja's ChainMap: a context iterates them
            # for every render, and a ChainMap is slow to iterate.
            compiled[name] = env.template_class.from_code(env, code, dict(env.make_globals(None)))
        except Exception as exc:
            raise TemplateError(
                _message(exc), field=name, line=_error_line(exc, _filename(name))
            ) from None
        sources[name] = source
    return CompiledContent(compiled, sources, max_chars, None if used is None else frozenset(used))


def profile_fields(tree: nodes.Template) -> frozenset[str] | None:
    """The fields of `profile` a template reads by name, or None when it uses `profile` in
    any other way (the sending pass then selects every profile column)."""
    names = sum(1 for node in tree.find_all(nodes.Name) if node.name == "profile")
    fields: set[str] = set()
    reads = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        if not (isinstance(node.node, nodes.Name) and node.node.name == "profile"):
            continue
        if isinstance(node, nodes.Getattr):
            if hasattr(dict, node.attr):  # profile.get(...), profile.items(): the whole dict
                return None
            fields.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            fields.add(node.arg.value)
        else:
            return None
        reads += 1
    return frozenset(fields) if reads == names else None
