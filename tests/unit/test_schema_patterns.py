"""The patterns the API's OpenAPI schema states say what its validators decide.

``stratoflow.schemas`` spells some rules twice: as the Python check that refuses a value (and
words the refusal) and as a ``pattern`` in the schema, for clients and for fuzzers such as
schemathesis (tests/integration/test_schemathesis.py). Here every pattern is matched both as
Python reads it and as JSON Schema does (``jsonschema_rs``: ECMA-262 regular expressions) against
the check, on hand-picked values and on generated ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratoflow.deployments.packaging import EntrypointError, check_entrypoint
from stratoflow.exceptions import InvalidNameError, raise_on_name_with_banned_characters
from stratoflow.packages import relative_path_problem
from stratoflow.schemas import (
    ENTRYPOINT_PATTERN,
    LEVEL_NAME_PATTERN,
    OBJECT_NAME_PATTERN,
    RELATIVE_PATH_PATTERN,
    _level,
)


def _entrypoint_ok(value: str) -> bool:
    try:
        check_entrypoint(value)
    except EntrypointError:
        return False
    return True


def _name_ok(value: str) -> bool:
    try:
        raise_on_name_with_banned_characters(value)
    except InvalidNameError:
        return False
    return True


RULES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "relative path": (RELATIVE_PATH_PATTERN, lambda v: relative_path_problem(v) is None),
    "entrypoint": (ENTRYPOINT_PATTERN, _entrypoint_ok),
    "object name": (OBJECT_NAME_PATTERN, _name_ok),
    "level name": (LEVEL_NAME_PATTERN, lambda v: isinstance(_level(v), int)),
}
# The characters the rules turn on, and a few they do not.
ALPHABET = "/\\\x00.:aCpy_ é\n%&<>" + "INFOWARNDEBUGinfo"
SAMPLES = [
    "", ".", "..", "...", "/", "a", "a/", "/a", "a//b.py:f", "./a.py:f", "../a.py:f", "a/../b.py:f", "a/...py:f",
    "C:x.py:f", "Cx.py:f", "C", "x.py", "x.py:", ":f", ".py:f", "a.py:f:g", "a:b.py:f", "ab:c.py:f", "a\\b.py:f",
    "a\x00.py:f", "flows/etl.py:daily", "flows/etl.py:daily\n", "a/b.py\n:f", "a/b", "a\n", "\n", "etl: daily",
    "etl/daily", "50%", "info", "INFO", "Info", " info", "info\n", "\u0131nfo", "warn", "WARNING", "notset",
]


def _schema_valid(pattern: str, value: str) -> bool:
    return jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid(value)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("value", SAMPLES)
def test_a_pattern_accepts_what_its_check_accepts(rule: str, value: str) -> None:
    pattern, check = RULES[rule]
    expected = check(value) if value or rule != "relative path" else False  # "" is a problem too
    assert (re.fullmatch(pattern, value) is not None) == expected, (rule, value)
    assert _schema_valid(pattern, value) == expected, (rule, value)


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=st.text(alphabet=ALPHABET, max_size=14))
def test_generated_values_too(rule: str, value: str) -> None:
    pattern, check = RULES[rule]
    expected = check(value) if value or rule != "relative path" else False
    assert (re.fullmatch(pattern, value) is not None) == expected, (rule, value)
    assert _schema_valid(pattern, value) == expected, (rule, value)
