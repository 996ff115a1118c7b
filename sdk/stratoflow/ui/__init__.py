"""The Stratoflow web UI: static assets (``static/``) served by the API function under ``/ui/``.

Plain HTML, CSS and JavaScript modules, no build step and nothing fetched from elsewhere: every
file the browser loads is one of ``static/*``. ``stratoflow.api.routes.ui`` serves them with
:func:`asset_response` and adds the read-only ``/ui/api/...`` aggregates the pages use.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
# A served name is one path segment of the static folder: no slashes, no dot files, no "..".
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
BINARY_SUFFIXES = frozenset({".png"})
# Assets are not content-hashed in their names: the browser revalidates each time (a 304 with the ETag).
CACHE_CONTROL = "private, no-cache"
# Smaller text bodies are sent as they are: gzip would not pay for the base64 round trip.
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class Asset:
    name: str
    content_type: str
    data: bytes
    etag: str
    gzipped: bytes | None

    @property
    def is_text(self) -> bool:
        return not any(self.name.endswith(s) for s in BINARY_SUFFIXES)


_cache: dict[str, Asset] = {}
_cache_lock = threading.Lock()


def asset_names() -> list[str]:
    """Every file the UI serves."""
    return sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file() and _NAME.match(p.name))


def load_asset(name: str) -> Asset | None:
    """The asset called ``name`` (``index.html``, ``app.js``, ...), or None when there is no such
    file or the name is not a plain file name of the static folder (``..``, slashes, dot files)."""
    if not _NAME.match(name) or Path(name).suffix not in CONTENT_TYPES:
        return None
    cached = _cache.get(name)
    if cached is not None:
        return cached
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file():
        return None
    data = path.read_bytes()
    suffix = path.suffix
    packed = None
    if suffix not in BINARY_SUFFIXES and len(data) >= GZIP_MIN_BYTES:
        packed = gzip.compress(data, compresslevel=9, mtime=0)
    asset = Asset(name=name, content_type=CONTENT_TYPES[suffix], data=data,
                  etag='"' + hashlib.sha256(data).hexdigest()[:32] + '"', gzipped=packed)
    with _cache_lock:
        _cache[name] = asset
    return asset


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong, or ``*``)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
