"""The real API function (functions/api/app.py) behind ``stratoflow dev``, over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (REPO_ROOT / "functions" / "api" / "app.py").is_file(),
                                reason="functions/api/app.py not present")


def get(stack: Any, path: str) -> tuple[int, str | None, Any]:
    try:
        with urlopen(Request(stack.api_url + path), timeout=30) as response:
            return response.status, response.headers.get("content-type"), json.loads(response.read())
    except HTTPError as error:
        return error.code, error.headers.get("content-type"), json.loads(error.read())


def test_health(dev_stack: Any) -> None:
    status, content_type, body = get(dev_stack, "/health")
    assert status == 200
    assert content_type is not None and content_type.startswith("application/json")
    assert body["status"] == "ok"


def test_openapi_document(dev_stack: Any) -> None:
    status, _, document = get(dev_stack, "/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    assert "/health" in document["paths"]


def test_unknown_flow_run_is_a_404(dev_stack: Any) -> None:
    status, _, body = get(dev_stack, "/flow_runs/does-not-exist")
    assert status == 404
    assert "error" in body


def test_a_run_made_with_the_exported_settings_reads_back_through_the_api(dev_stack: Any, tmp_path: Path) -> None:
    """The SDK in another process (the printed exports, straight to the store) writes a run into
    the stack's moto; the API function reads it back."""
    script = textwrap.dedent("""
        from stratoflow import flow, get_client

        @flow(name="over-http")
        def over_http() -> int:
            return 7

        assert over_http() == 7
        print(get_client().read_flow_runs(flow_name="over-http")[0].id)
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    env = {k: v for k, v in dev_stack.env.items() if k != "STRATOFLOW_API_URL"}
    result = subprocess.run([sys.executable, "-c", script], env={**clean, **env, "STRATOFLOW_HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    status, _, run = get(dev_stack, f"/flow_runs/{run_id}")
    assert status == 200, run
    assert run["id"] == run_id
    assert run["flow_name"] == "over-http"
