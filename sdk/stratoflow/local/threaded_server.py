"""What the two servers of ``stratoflow dev`` (the API in ``api_server.py``, moto in
``moto_server.py``) share: a thread per connection that ``stop()`` can end and join, so a stopped
stack leaves no thread behind, and a listen backlog that holds a burst of clients.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from typing import Any

# Pending connections the kernel keeps for the API and moto servers: socketserver's default (5)
# made a burst of 32 clients see connection resets.
LISTEN_BACKLOG = 128
STOP_TIMEOUT = 5.0  # how long a stop waits for the threads it ends


class TrackedThreadingMixIn(socketserver.ThreadingMixIn):
    """A thread per connection, as ThreadingMixIn, but tracked: ``close_connections`` ends idle
    keep-alive connections (``shutdown(SHUT_RD)``: a request in flight still gets its answer)
    and joins every connection thread."""

    thread_prefix = "stratoflow-dev"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, Any] = {}
        self._counter = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._counter += 1
            thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                      name=f"{self.thread_prefix}-{self._counter}", daemon=True)
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float) -> list[threading.Thread]:
        """Call after ``shutdown()``; returns the connection threads still running after ``timeout``."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t, _ in connections if t.is_alive()]
