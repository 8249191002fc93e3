"""The CLI says it is serving only once our router answers its /ready, never on another server's 200."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from serve_app.cli import wait_ready


def answering(body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), answering(request.param))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ready"
    httpd.shutdown()


@pytest.mark.parametrize("server", [json.dumps({"status": "ready", "models": ["m"]}).encode()], indirect=True)
def test_our_routers_ready_answer_is_ready(server):
    assert wait_ready(server, 5, threading.Event())


@pytest.mark.parametrize("server", [b"# HELP autoscaler_pending_resources\n", b"[]", b'{"status": "ok"}'],
                         indirect=True, ids=["prometheus-metrics", "json-list", "health-not-ready"])
def test_another_servers_200_on_the_port_is_not_ready(server):
    assert not wait_ready(server, 1.5, threading.Event())
