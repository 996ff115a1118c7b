"""The stack's result key: the secret that signs results (``stratoflow.storage.results``).

Where it comes from, first match wins:

1. ``STRATOFLOW_RESULT_KEY`` (hex, at least 32 bytes): set by hand, e.g. for a test;
2. ``STRATOFLOW_RESULT_KEY_SECRET``: a Secrets Manager secret (name or ARN). ``template.yaml``
   creates one per stack (``ResultKey``) and gives its runners (executor, API, workers' policy in
   docs/security.md) ``secretsmanager:GetSecretValue``; ``stratoflow dev`` provisions it into moto;
3. the local home (``$STRATOFLOW_HOME/result-key``, mode 0600, made on first use) on the embedded
   backend and in the local cloud, so runs made either way read each other's results.

Without any of these a process can still read JSON results, but can sign nothing and load no
pickle. The key is read once per process (and per configuration) and kept in memory.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from stratoflow.settings import Settings, get_settings
from stratoflow.storage import aws as _aws
from stratoflow.storage.results import NO_KEY, KeySigner, ResultKeyUnavailable

KEY_FILE = "result-key"
MIN_KEY_BYTES = 32
_lock = threading.Lock()
_cache: dict[tuple[object, ...], bytes | None] = {}


def _identity(settings: Settings) -> tuple[object, ...]:
    raw = settings.result_key.get_secret_value() if settings.result_key is not None else None
    return (raw, settings.result_key_secret, settings.aws_endpoint_url, settings.region,
            settings.resolved_backend, str(settings.home))


def result_key(settings: Settings | None = None) -> bytes | None:
    """The key, or None when this process has no way to read it."""
    settings = settings or get_settings()
    ident = _identity(settings)
    with _lock:
        if ident in _cache:
            return _cache[ident]
        key = _load(settings)
        _cache[ident] = key
        return key


def require_result_key(settings: Settings | None = None) -> bytes:
    key = result_key(settings)
    if key is None:
        raise ResultKeyUnavailable(NO_KEY)
    return key


def local_signer(settings: Settings | None = None) -> KeySigner | None:
    """A signer holding this process's key, or None when it has none."""
    key = result_key(settings)
    return KeySigner(key) if key is not None else None


def forget_result_keys() -> None:
    """Drop cached keys (tests switch stacks and homes)."""
    with _lock:
        _cache.clear()


def _load(settings: Settings) -> bytes | None:
    if settings.result_key is not None:
        return _parse(settings.result_key.get_secret_value(), "STRATOFLOW_RESULT_KEY")
    if settings.result_key_secret:
        return _from_secrets_manager(settings)
    if settings.resolved_backend == "embedded":
        return home_key(settings.home)
    return None


def _parse(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = text.strip().encode()
    if len(key) < MIN_KEY_BYTES:
        raise ResultKeyUnavailable(f"{where}: the result key must have at least {MIN_KEY_BYTES} bytes")
    return key


def _from_secrets_manager(settings: Settings) -> bytes:
    # cold start: botocore's signer loads only in a process that calls the API
    from botocore.exceptions import BotoCoreError, ClientError


    try:
        answer = _aws.client("secretsmanager", settings).get_secret_value(SecretId=settings.result_key_secret)
    except (ClientError, BotoCoreError) as exc:
        raise ResultKeyUnavailable(
            f"cannot read the result key secret {settings.result_key_secret!r}: {exc}; runners need "
            "secretsmanager:GetSecretValue on it") from None
    return _parse(str(answer.get("SecretString") or ""), f"secret {settings.result_key_secret}")


def ensure_result_key_secret(settings: Settings, name: str, value: str) -> str:
    """Create the Secrets Manager secret ``name`` holding ``value`` unless it exists; its ARN.
    What the local cloud provisions for the template's ``ResultKey`` (moto's Secrets Manager)."""

    client = _aws.client("secretsmanager", settings)
    try:
        return str(client.describe_secret(SecretId=name)["ARN"])
    except client.exceptions.ResourceNotFoundException:
        pass
    try:
        return str(client.create_secret(Name=name, SecretString=value)["ARN"])
    except client.exceptions.ResourceExistsException:  # made meanwhile by another process
        return str(client.describe_secret(SecretId=name)["ARN"])


def home_key(home: Path) -> bytes:
    """The local home's key, made (0600, atomically) on first use. Refuses a key file that other
    users could read or write: anyone who can read it can forge results this home trusts."""
    path = Path(home) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process made the key first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    info = path.stat()
    if info.st_mode & 0o077:
        raise ResultKeyUnavailable(f"{path} is readable or writable by other users (mode {oct(info.st_mode & 0o777)});"
                                   f" run `chmod 600 {path}`")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ResultKeyUnavailable(f"{path} belongs to another user; it cannot be trusted as this user's key")
    return _parse(path.read_text(), str(path))
