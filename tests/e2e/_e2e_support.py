"""Helpers of the browser tests: plain JSON calls to the stack's API (no SDK state involved)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class StackClient:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self.api_url = env["STRATOFLOW_API_URL"].rstrip("/")
        self.ui_url = f"{self.api_url}/ui/"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None, dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None, dict(exc.headers)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload, _ = self.call(method, path, body)
        assert status < 300, f"{method} {path} -> {status}: {payload}"
        return payload
