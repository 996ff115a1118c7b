"""Queue names scope IAM: a stack's ``<prefix>_*`` matches its own queues and no other stack's,
even when one prefix extends the other (``sf`` and ``sf-a``)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import pytest

from stratoflow.workpools.naming import MAX_PREFIX_LENGTH, dlq_name, iam_name_pattern, queue_name

# What template.yaml allows for TablePrefix, and what the API allows for pool and queue names.
PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
POOLS = ["pool", "a-pool", "a", "default", "a_b", "x--y", "P" * 64]
QUEUES = ["default", "urgent", "pool", "q-1", "q_2", "Q" * 64]


def _names(prefix: str) -> set[str]:
    return {queue_name(prefix, p, q) for p in POOLS for q in QUEUES} | {dlq_name(prefix, p) for p in POOLS}


@pytest.mark.parametrize(("ours", "theirs"), [
    ("sf", "sf-a"), ("sf-a", "sf"), ("sf", "sf-pool"), ("stratoflow", "stratoflow-dev"),
    ("ab", "ab-" + "c" * 37), ("a" * 40, "a" * 39)])
def test_a_prefix_that_extends_another_never_shares_names_or_patterns(ours: str, theirs: str) -> None:
    assert PREFIX.match(ours) and PREFIX.match(theirs)
    our_names, their_names = _names(ours), _names(theirs)
    assert not our_names & their_names
    assert all(fnmatchcase(n, iam_name_pattern(ours)) for n in our_names)
    assert all(fnmatchcase(n, iam_name_pattern(theirs)) for n in their_names)
    assert not any(fnmatchcase(n, iam_name_pattern(ours)) for n in their_names)
    assert not any(fnmatchcase(n, iam_name_pattern(theirs)) for n in our_names)


def test_the_old_dash_collision_is_gone() -> None:
    # With "<prefix>-<pool>--<queue>" both were "sf-a-pool--default".
    assert queue_name("sf", "a-pool", "default") != queue_name("sf-a", "pool", "default")
    assert queue_name("sf", "a-pool", "default") == "sf_a-pool--default"
    assert dlq_name("sf-a", "pool") == "sf-a_pool--dlq"
    assert iam_name_pattern("sf") == "sf_*"


def test_long_names_are_cut_to_80_and_stay_distinct_and_in_scope() -> None:
    prefix = "p" * 40
    long_pool, long_queue = "P" * 64, "Q" * 64
    names = {queue_name(prefix, long_pool, long_queue), queue_name(prefix, long_pool, long_queue[:-1] + "R"),
             dlq_name(prefix, long_pool), queue_name(prefix, long_pool, "default")}
    assert len(names) == 4
    for name in names:
        assert SQS_NAME.match(name), name
        assert fnmatchcase(name, iam_name_pattern(prefix))
    assert len(queue_name(prefix, long_pool, long_queue)) == 80
    # Deterministic: the same pool and queue always give the same (cut) name.
    assert queue_name(prefix, long_pool, long_queue) == queue_name(prefix, long_pool, long_queue)
    # A short name is kept as is.
    assert queue_name("sf", "etl", "default") == "sf_etl--default"


@pytest.mark.parametrize("prefix", ["", "sf_a", "_", "p" * (MAX_PREFIX_LENGTH + 1)])
def test_a_prefix_that_would_break_the_scoping_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="table prefix"):
        queue_name(prefix, "pool", "default")
    with pytest.raises(ValueError, match="table prefix"):
        dlq_name(prefix, "pool")
    with pytest.raises(ValueError, match="table prefix"):
        iam_name_pattern(prefix)


def test_the_longest_allowed_prefix_survives_the_cut() -> None:
    prefix = "p" * MAX_PREFIX_LENGTH
    name = queue_name(prefix, "P" * 64, "Q" * 64)
    assert len(name) == 80 and name.startswith(prefix + "_")
