#!/usr/bin/env python3
"""State-transition latency of the control-plane API over local HTTP, and the handler's cold start.

    .venv/bin/python bench/api_latency.py [--requests N] [--cold-runs K] [--output PATH]

1. Starts ``stratoflow dev --port 0`` (moto server + the API handler behind a local API Gateway)
   in a subprocess of its own, as a client would find it; its output goes to
   ``bench/results/api_latency.log``.
2. Creates flow runs (Scheduled) and walks each through Pending -> Running -> Completed with
   ``POST /flow_runs/{id}/set_state``: N set_state requests (default 500), every one checked to
   be ACCEPTed. For each request it records the client-observed latency (request written to
   response read) and the handler's own duration from the stack's ``x-stratoflow-handler-ms``
   header (the invocation alone: no HTTP parsing, no queueing, no transport); their difference
   is transport (HTTP, the local API Gateway's event building, the Lambda runtime's hand-off).
   Three client styles:
   * ``keep-alive``: one persistent connection with TCP_QUICKACK set before each response, as
     the SDK's HTTP client does (the headline);
   * ``new connection``: a TCP connection per request;
   * ``keep-alive, no quickack``: a plain persistent connection (a smaller sample): shows the
     delayed-ACK stall a naive client meets against this server.
3. Cold import of ``functions/api/app.py``: K fresh interpreters (default 5) each time the
   import alone (interpreter start-up excluded), then the first request after it (a set_state,
   called on the handler directly with the API Gateway event, against the stack's moto: it
   builds the app, the store and the boto3 clients) and a second, warm one. Medians reported.

Prints a table and writes ``bench/results/api_latency.json``. Exit status is non-zero when the
stack fails to start or a transition is not accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
HANDLER = REPO / "functions" / "api" / "app.py"
HANDLER_MS_HEADER = "x-stratoflow-handler-ms"
READY_TIMEOUT = 90.0
TRANSITIONS = ("PENDING", "RUNNING", "COMPLETED")  # from the created run's Scheduled
NO_QUICKACK_MAX = 100  # requests in the plain keep-alive sample (each stalls ~40 ms)

# Run in a fresh interpreter: import the handler module (timed), then invoke it with the events
# read from stdin (each timed). The last stdout line is the JSON result.
COLD_SCRIPT = r"""
import time
t0 = time.perf_counter()
import importlib.util, sys
handler_path = sys.argv[1]
sys.path.insert(0, handler_path.rsplit("/", 1)[0])  # Lambda's task root
spec = importlib.util.spec_from_file_location("stratoflow_api_handler", handler_path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
t1 = time.perf_counter()
import json, types
events = json.loads(sys.stdin.read())
context = types.SimpleNamespace(
    function_name="stratoflow-api", function_version="$LATEST", memory_limit_in_mb="512",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:stratoflow-api",
    aws_request_id="bench", log_group_name="/aws/lambda/stratoflow-api", log_stream_name="bench",
    get_remaining_time_in_millis=lambda: 30000)
times, statuses = [], []
for event in events:
    s = time.perf_counter()
    response = module.lambda_handler(event, context)
    times.append((time.perf_counter() - s) * 1000)
    statuses.append(response.get("statusCode"))
print("\nCOLD-RESULT " + json.dumps({"import_ms": (t1 - t0) * 1000, "request_ms": times, "statuses": statuses}))
"""


# -- the stack -------------------------------------------------------------------------------------
class Stack:
    """``stratoflow dev --port 0`` in a subprocess; the settings come from its ``export`` lines."""

    def __init__(self, home: Path, log_path: Path) -> None:
        self.home = home
        self.log = log_path.open("w")
        env = clean_env(home)
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "stratoflow.cli", "dev", "--port", "0"]
        self.process = subprocess.Popen(command, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.exports: dict[str, str] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"`{shlex.join(command)}` did not become ready; see {log_path}")
        self.api_url = self.exports["STRATOFLOW_API_URL"]
        parts = urlsplit(self.api_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(line)
            text = line.strip()
            if text.startswith("export "):
                name, _, value = text[len("export "):].partition("=")
                self.exports[name] = shlex.split(value)[0] if value else ""
            elif text == "ready":
                self.ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_", "POWERTOOLS_"))}
    env.update(STRATOFLOW_HOME=str(home), STRATOFLOW_LOG_TO_CONSOLE="false")
    return env


# -- HTTP ------------------------------------------------------------------------------------------
class Client:
    """One client style: ``keepalive`` (with or without TCP_QUICKACK) or a connection per request."""

    def __init__(self, stack: Stack, style: str) -> None:
        self.stack = stack
        self.style = style
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.style == "new-connection" or self.conn is None:
            self.conn = http.client.HTTPConnection(self.stack.host, self.stack.port, timeout=60)
            self.conn.connect()
        return self.conn

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float, float | None]:
        """(status, JSON body, client ms, handler ms)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        started = time.perf_counter()
        conn = self._connection()
        conn.request(method, path, body=data, headers=headers)
        if self.style == "keepalive" and conn.sock is not None:  # as the SDK: ACK the response's first segment now
            quickack = getattr(socket, "TCP_QUICKACK", None)
            if quickack is not None:
                with contextlib.suppress(OSError):
                    conn.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        response = conn.getresponse()
        raw = response.read()
        client_ms = (time.perf_counter() - started) * 1000
        handler = response.getheader(HANDLER_MS_HEADER)
        if self.style == "new-connection":
            conn.close()
            self.conn = None
        return response.status, json.loads(raw) if raw else None, client_ms, float(handler) if handler else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def create_run(client: Client, name: str) -> str:
    status, body, _, _ = client.request("POST", "/flow_runs", {"flow_name": name})
    if status != 201:
        raise SystemExit(f"creating a flow run failed: {status} {body}")
    return str(body["id"])


def measure(stack: Stack, style: str, requests: int, flow_name: str) -> dict[str, list[float]]:
    """``requests`` set_state calls walking fresh runs Scheduled -> Pending -> Running -> Completed."""
    client = Client(stack, style)
    total: list[float] = []
    handler: list[float] = []
    try:
        create_run(client, flow_name)  # warm the function and the connection (not measured)
        run_id, step = "", len(TRANSITIONS)
        while len(total) < requests:
            if step == len(TRANSITIONS):
                run_id, step = create_run(client, flow_name), 0
            state = TRANSITIONS[step]
            status, body, client_ms, handler_ms = client.request(
                "POST", f"/flow_runs/{run_id}/set_state", {"state": {"type": state}})
            if status != 200 or not isinstance(body, dict) or body.get("status") != "ACCEPT":
                raise SystemExit(f"set_state {state} on {run_id} was not accepted: {status} {body}")
            if handler_ms is None:
                raise SystemExit(f"the stack sent no {HANDLER_MS_HEADER} header (is it an older stratoflow dev?)")
            total.append(client_ms)
            handler.append(handler_ms)
            step += 1
    finally:
        client.close()
    transport = [t - h for t, h in zip(total, handler, strict=True)]
    return {"total_ms": total, "handler_ms": handler, "transport_ms": transport}


def cold_starts(stack: Stack, runs: int, flow_name: str) -> list[dict[str, Any]]:
    """Fresh interpreters: import the handler, then a first (cold) and a second (warm) set_state."""
    from stratoflow.local.api_gateway import build_http_api_event, new_gateway_request_id

    client = Client(stack, "new-connection")
    env = {**clean_env(stack.home), **{k: v for k, v in stack.exports.items() if k != "STRATOFLOW_API_URL"}}
    out = []
    for _ in range(runs):
        run_id = create_run(client, flow_name)
        events = [build_http_api_event(
            method="POST", target=f"/flow_runs/{run_id}/set_state",
            headers=[("content-type", "application/json"), ("host", f"{stack.host}:{stack.port}")],
            body=json.dumps({"state": {"type": state}}).encode(), source_ip="127.0.0.1", server_port=stack.port,
            request_id=new_gateway_request_id()) for state in ("PENDING", "RUNNING")]
        done = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(HANDLER)], input=json.dumps(events),
                              capture_output=True, text=True, env=env, cwd=stack.home, timeout=120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("COLD-RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"cold-start subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(lines[-1].removeprefix("COLD-RESULT "))
        if result["statuses"] != [200, 200]:
            raise SystemExit(f"cold-start requests answered {result['statuses']}:\n{done.stdout[-2000:]}")
        out.append(result)
    client.close()
    return out


# -- reporting -------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": cuts[89], "p99": cuts[98],
            "min": ordered[0], "max": ordered[-1], "mean": statistics.fmean(ordered)}


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"State-transition latency over local HTTP (POST /flow_runs/{{id}}/set_state), ms "
          f"[{results['machine']['cpus']} CPUs, load {results['machine']['loadavg_1m']:.2f}]")
    header = f"{'client':<26} {'n':>5} {'':<10} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for style, parts in results["styles"].items():
        for i, (part, label) in enumerate((("total_ms", "total"), ("handler_ms", "handler"),
                                           ("transport_ms", "transport"))):
            s = parts[part]
            print(f"{(style if i == 0 else ''):<26} {(s['n'] if i == 0 else ''):>5} {label:<10} "
                  f"{s['median']:>8.2f} {s['p90']:>8.2f} {s['p99']:>8.2f} {s['max']:>8.2f}")
    cold = results["cold_import"]
    print()
    print(f"Handler module cold import (functions/api/app.py, {cold['runs']} fresh interpreters): "
          f"median {cold['import_ms']['median']:.1f} ms (min {cold['import_ms']['min']:.1f}, "
          f"max {cold['import_ms']['max']:.1f})")
    print(f"First request after the cold import (set_state: builds the app, store, boto3 clients): "
          f"median {cold['first_request_ms']['median']:.1f} ms; the second (warm): "
          f"median {cold['second_request_ms']['median']:.1f} ms")
    print(f"Cold start total (import + first request): median {cold['cold_total_ms']['median']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="set_state requests per client style (500)")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh interpreters for the cold import (5)")
    parser.add_argument("--output", type=Path, default=RESULTS / "api_latency.json")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.cold_runs < 1:
        parser.error("--requests and --cold-runs must be at least 1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if loadavg > 0.5:
        print(f"!! load average is {loadavg:.2f}: other work on this machine will show in the numbers", flush=True)
    flow_name = f"bench-api-latency-{os.getpid()}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stratoflow-bench-api-") as tmp:
        print("== starting stratoflow dev", flush=True)
        stack = Stack(Path(tmp), RESULTS / "api_latency.log")
        try:
            styles: dict[str, Any] = {}
            for style, label, n in (("keepalive", "keep-alive (SDK-like)", args.requests),
                                    ("new-connection", "new connection", args.requests),
                                    ("keepalive-no-quickack", "keep-alive, no quickack",
                                     min(args.requests, NO_QUICKACK_MAX))):
                print(f"== {label}: {n} set_state requests", flush=True)
                raw = measure(stack, style, n, flow_name)
                styles[label] = {part: summary(values) for part, values in raw.items()}
            print(f"== cold import: {args.cold_runs} fresh interpreters", flush=True)
            cold = cold_starts(stack, args.cold_runs, flow_name)
        finally:
            stack.stop()
    imports = [c["import_ms"] for c in cold]
    firsts = [c["request_ms"][0] for c in cold]
    results = {
        "benchmark": "api_latency",
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "requests": args.requests,
        "endpoint": "POST /flow_runs/{id}/set_state (Scheduled -> Pending -> Running -> Completed)",
        "handler_time": f"the {HANDLER_MS_HEADER} response header of stratoflow dev",
        "styles": styles,
        "cold_import": {
            "runs": args.cold_runs,
            "import_ms": summary(imports),
            "first_request_ms": summary(firsts),
            "second_request_ms": summary([c["request_ms"][1] for c in cold]),
            "cold_total_ms": summary([i + f for i, f in zip(imports, firsts, strict=True)]),
            "raw": cold,
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_1m": loadavg},
        "wall_s": time.perf_counter() - started,
    }
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output} "
          f"in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
