"""SQS queue names for pools and queues: deterministic, within SQS's 80 characters.

``<prefix>_<pool>--<queue>``. The underscore after the prefix is what scopes IAM: a stack's
prefix (template.yaml's TablePrefix, ``^[a-z][a-z0-9-]{1,39}$``) never contains one, so the
first ``_`` of a name ends its prefix, and the policy resource ``<prefix>_*``
(``iam_name_pattern``) matches this stack's queues only. With a dash there, stack ``sf``'s
``sf-*`` matched every queue of stack ``sf-a``, and stack ``sf``'s pool ``a-pool`` even got the
same queue names as stack ``sf-a``'s pool ``pool``.
"""

from __future__ import annotations

import hashlib

_MAX = 80  # SQS: up to 80 characters, alphanumeric, hyphen and underscore
_DIGEST = 10
SEPARATOR = "_"
# The longest prefix whose separator survives ``_fit``: it keeps the first _MAX - _DIGEST - 1 characters.
MAX_PREFIX_LENGTH = _MAX - _DIGEST - 2


def _fit(name: str) -> str:
    if len(name) <= _MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST]
    return f"{name[:_MAX - _DIGEST - 1]}-{digest}"


def _scoped(prefix: str) -> str:
    """``prefix`` and the separator; refuses a prefix that would make the scoping ambiguous."""
    if not prefix or SEPARATOR in prefix:
        raise ValueError(f"table prefix {prefix!r}: must be non-empty and contain no {SEPARATOR!r} "
                         "(it separates the prefix in queue names, which IAM policies match on)")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ValueError(f"table prefix {prefix!r}: longer than {MAX_PREFIX_LENGTH} characters, the most a "
                         "queue name keeps whole")
    return prefix + SEPARATOR


def queue_name(prefix: str, pool: str, queue: str) -> str:
    """``<prefix>_<pool>--<queue>``: the double dash keeps (pool, queue) pairs distinct."""
    return _fit(f"{_scoped(prefix)}{pool}--{queue}")


def dlq_name(prefix: str, pool: str) -> str:
    return _fit(f"{_scoped(prefix)}{pool}--dlq")


def iam_name_pattern(prefix: str) -> str:
    """The queue-name part of an IAM resource ARN that covers every queue of the stack with
    ``prefix`` and no queue of another stack (template.yaml writes it as ``${TablePrefix}_*``)."""
    return f"{_scoped(prefix)}*"


DEFAULT_QUEUE = "default"
