"""A small HTTP file server with Range support and scripted misbehaviour, for download tests.

Binds 127.0.0.1 on a free port in a background thread; use it as a context manager so the
test that starts it also stops it.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/x-tar"
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    drop_after: list[int] = field(default_factory=list)  # per request, in order: close after N body bytes
    # stall after this many body bytes of a reply until ``release`` is set (a download to kill mid-way)
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def etag(self) -> str:
        """A strong validator that changes whenever the body does."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class RangeServer:
    """``with RangeServer() as srv: srv.routes["/f.tar"] = Route(data); srv.url("/f.tar")``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header) of each GET
        self.heads: list[str] = []  # paths of HEAD requests
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                outer.heads.append(self.path)
                route = outer.routes.get(self.path)
                if route is None or route.status != 200:
                    self.send_error(404 if route is None else route.status)
                    return
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", route.etag)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Range")))
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                body, start = route.body, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not route.ignore_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                    self.send_header("Accept-Ranges", "bytes")
                payload = body[start:]
                self.send_header("ETag", route.etag)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if route.drop_after:
                    cut = route.drop_after.pop(0)
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if route.hold_after is not None and not route.release.is_set():
                    self.wfile.write(payload[: route.hold_after])
                    self.wfile.flush()
                    route.release.wait()
                    payload = payload[route.hold_after :]
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed meanwhile
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
