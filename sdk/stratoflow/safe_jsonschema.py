"""JSON Schema validation whose regular expressions cannot hold a request.

jsonschema runs ``pattern`` and ``patternProperties`` with Python's ``re``, a backtracking engine:
``^(a+)+$`` against forty ``a`` and a ``!`` takes hours. A deployment's schema is written by one
user and checked against the parameters another user (or a schedule) sends, so here those
keywords run on RE2 (``google-re2``), which matches in time linear in the input.

Linear is not small enough by itself: when RE2's DFA gives up on a pattern (``[ab]*a[ab]{1000}c``)
it falls back to an NFA whose cost per input byte grows with the pattern's compiled size: seconds
for a 1 MB value, and a schema may apply patterns to many values. So one validation's regex work
(compiles and matches, timed) has a budget, ``REGEX_SECONDS``, and a match whose worst case
(input bytes x program size x ``WORST_NS_PER_STEP``) does not fit what is left is not started:
the validation stops with ``RegexBudgetExceeded`` instead. Ordinary patterns match a 1 MiB value
in about a millisecond and come nowhere near it.

RE2 has no look-around and no backreferences; ``unevaluatedProperties`` would match
``patternProperties`` with ``re`` again, and a ``$schema`` below the root would switch to
jsonschema's stock classes (both happen inside jsonschema). ``check_safe`` refuses such schemas,
naming the place, so a deployment learns it when it is made; ``validation_errors`` refuses them
too (a schema stored before these checks).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin

# Regex time one validation may spend, and the worst cost of one input byte against one program
# instruction when RE2 falls back to its NFA (measured up to ~13 ns on x86-64; 15 leaves room).
REGEX_SECONDS = 0.25
WORST_NS_PER_STEP = 15
# RE2's memory per pattern (its program and DFA cache). The re2 module keeps its last 128
# compiled patterns, so at most ~128 MiB; larger patterns do not compile.
_MAX_MEM = 1 << 20

# Keywords whose value holds subschemas: a mapping of them, or one subschema or a list of them.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_SCHEMA_VALUES = ("additionalProperties", "additionalItems", "unevaluatedProperties", "unevaluatedItems", "items",
                  "prefixItems", "contains", "propertyNames", "not", "if", "then", "else", "allOf", "anyOf",
                  "oneOf", "extends")


class UnsafeSchema(ValueError):
    """The schema cannot be evaluated safely; ``where`` is the dotted path of the culprit."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class RegexBudgetExceeded(Exception):
    """The validation's regex work would go over ``REGEX_SECONDS``."""


@dataclass
class _Budget:
    left: float = REGEX_SECONDS
    compiled: dict[str, Any] = field(default_factory=dict)

    def search(self, pattern: str, text: str) -> bool:
        """Whether ``pattern`` matches somewhere in ``text``; the time it takes (compiling too)
        is spent from the budget, and a match that might not fit it is refused unstarted."""
        started = time.perf_counter()
        regex = self.compiled.get(pattern)
        if regex is None:
            regex = self.compiled[pattern] = compile_pattern(pattern)
        data = text.encode("utf-8", "surrogatepass")
        if (len(data) + 1) * regex.programsize * WORST_NS_PER_STEP * 1e-9 > self.left:
            raise RegexBudgetExceeded(f"matching {len(data)} bytes against {pattern[:100]!r} could take "
                                      f"longer than the {REGEX_SECONDS} s allowed")
        found = regex.search(data) is not None
        self._spend(time.perf_counter() - started)
        return found

    def _spend(self, seconds: float) -> None:
        self.left -= seconds
        if self.left < 0:
            raise RegexBudgetExceeded(f"the schema's patterns took more than the {REGEX_SECONDS} s allowed")


_budget: ContextVar[_Budget | None] = ContextVar("stratoflow_regex_budget", default=None)


@functools.lru_cache(maxsize=64)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (no capture groups: only whether it matches is asked).

    Raises ``re2.error`` when RE2 cannot compile it (look-around, backreferences, too large)."""
    # cold start: re2 loads when a schema is first checked
    import re2

    options = re2.Options()
    options.never_capture = True
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.max_mem = _MAX_MEM
    return re2.compile(pattern, options)


def _search(pattern: str, text: str) -> bool:
    budget = _budget.get() or _Budget()
    try:
        return budget.search(pattern, text)
    except RegexBudgetExceeded:
        raise
    except Exception as exc:  # re2.error: a schema stored before its patterns were checked
        raise UnsafeSchema("", f"pattern {pattern!r} is not supported ({_reason(exc)}); "
                               "deploy again with a pattern RE2 accepts") from None


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


# -- the keywords that match regexes, on RE2 (same results and messages as jsonschema's) ----------
def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key not in properties and not any(_search(p, key) for p in patterns):
            yield key


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema._utils import extras_msg
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            names, verb = extras_msg(sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


_SAFE_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
                  "additionalProperties": _additional_properties}


@functools.lru_cache(maxsize=16)
def _safe_class(base: Any) -> Any:
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema.validators import extend

    return extend(base, {k: v for k, v in _SAFE_KEYWORDS.items() if k in base.VALIDATORS})


def validation_errors(schema: dict[str, Any], instance: Any) -> list[Any]:
    """Every ``jsonschema.ValidationError`` of ``instance`` against ``schema``, with patterns on
    RE2 under one budget. Raises ``UnsafeSchema`` for a schema that cannot be run safely and
    ``RegexBudgetExceeded`` when the patterns would take more than ``REGEX_SECONDS``.

    ``$ref`` resolves within the schema (and the JSON Schema metaschemas) only: jsonschema's
    default registry fetches any other URL, with no timeout (a request held as long as that
    server likes, and one sent from inside the stack to wherever the schema says)."""
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    import referencing
    import referencing.exceptions
    from jsonschema.validators import validator_for

    _refuse_unsupported(schema)
    validator = _safe_class(validator_for(schema))(schema, registry=referencing.Registry())
    token = _budget.set(_Budget())
    try:
        return list(validator.iter_errors(instance))
    except referencing.exceptions.Unresolvable as exc:
        raise UnsafeSchema("", f"$ref {getattr(exc, 'ref', '')!r} does not resolve within the schema "
                               "(remote references are not fetched)") from None
    finally:
        _budget.reset(token)


# -- checks when a schema is stored ---------------------------------------------------------------
def check_safe(schema: Any) -> None:
    """Raise ``UnsafeSchema`` naming the first place that ``validation_errors`` would refuse: a
    pattern (``pattern``, a ``patternProperties`` key) RE2 cannot compile, a ``$ref`` to another
    document, a ``$schema`` below the root, ``unevaluatedProperties`` with ``patternProperties``;
    or patterns that take longer to compile than a validation may spend on them."""
    _refuse_unsupported(schema)
    _refuse_remote_refs(schema)
    deadline = time.perf_counter() + REGEX_SECONDS
    for path, node in _subschemas(schema):
        if time.perf_counter() > deadline:
            raise UnsafeSchema(_dotted(path), f"compiling the schema's patterns takes over {REGEX_SECONDS} s "
                               "(too many or too large patterns)")
        found: list[tuple[tuple[str | int, ...], Any]] = []
        if "pattern" in node:
            found.append(((*path, "pattern"), node["pattern"]))
        if isinstance(node.get("patternProperties"), dict):
            found += [((*path, "patternProperties", key), key) for key in node["patternProperties"]]
        for where, pattern in found:
            if not isinstance(pattern, str):
                continue  # the metaschema check names it
            try:
                compile_pattern(pattern)
            except Exception as exc:  # re2.error
                raise UnsafeSchema(_dotted(where), f"RE2 cannot compile {pattern!r} ({_reason(exc)}); patterns "
                                   "run on RE2: no look-around, backreferences or \\u escapes (use \\x{...})"
                                   ) from None


def format_checker() -> Any:
    """jsonschema's format checker with ``regex`` meaning "RE2 compiles it" (for the metaschema
    check of a schema: its patterns are what RE2 will run, not Python's ``re``)."""
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema import FormatChecker

    checker = FormatChecker()

    @checker.checks("regex", raises=Exception)
    def _regex(value: object) -> bool:
        if isinstance(value, str):
            compile_pattern(value)
        return True

    return checker


def _subschemas(schema: Any) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every subschema reachable through the applicator keywords, with its path."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for key in _SCHEMA_MAPS:
            children = node.get(key)
            if isinstance(children, dict):
                stack.extend(((*path, key, name), child) for name, child in children.items())
        for key in _SCHEMA_VALUES:
            value = node.get(key)
            if isinstance(value, dict):
                stack.append(((*path, key), value))
            elif isinstance(value, list):
                stack.extend(((*path, key, i), child) for i, child in enumerate(value))


def _objects(document: Any) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every object in the document with its path: data (``default``, ``enum``) too, as a
    ``$ref`` may lead anywhere."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            yield path, node
            stack.extend(((*path, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, i), value) for i, value in enumerate(node))


def _refuse_unsupported(schema: Any) -> None:
    """What would take validation off RE2: a ``$schema`` below the root makes jsonschema switch
    to its stock validator class there (Python's ``re``), and ``unevaluatedProperties`` matches
    ``patternProperties`` with ``re`` internally."""
    unevaluated: tuple[str | int, ...] | None = None
    patterns = False
    for path, node in _objects(schema):
        if path and "$schema" in node:
            raise UnsafeSchema(_dotted((*path, "$schema")), "only the root of the schema may name its $schema")
        if "unevaluatedProperties" in node and unevaluated is None:
            unevaluated = (*path, "unevaluatedProperties")
        patterns = patterns or isinstance(node.get("patternProperties"), dict)
    if unevaluated is not None and patterns:
        raise UnsafeSchema(_dotted(unevaluated), "is not supported together with patternProperties "
                                                 "(use additionalProperties)")


def _refuse_remote_refs(schema: Any) -> None:
    """A ``$ref`` to another document (not a metaschema, not an ``$id`` of this one) would never
    resolve: remote references are not fetched (see ``validation_errors``)."""
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema.validators import SPECIFICATIONS

    base = schema.get("$id", "") if isinstance(schema, dict) and isinstance(schema.get("$id"), str) else ""
    objects = list(_objects(schema))
    ids = {urldefrag(urljoin(base, node["$id"]))[0] for _, node in objects if isinstance(node.get("$id"), str)}
    for path, node in objects:
        ref = node.get("$ref")
        if not isinstance(ref, str) or ref.startswith("#"):
            continue
        target = urldefrag(urljoin(base, ref))[0]
        if target not in ids and target not in SPECIFICATIONS and f"{target}#" not in SPECIFICATIONS:
            raise UnsafeSchema(_dotted((*path, "$ref")), f"{ref!r} is another document: remote references "
                                                         "are not fetched (use $defs and #/$defs/...)")


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)
