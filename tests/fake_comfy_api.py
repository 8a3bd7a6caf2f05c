"""For the tests of ``scripts/api_example.py``: the script itself (:func:`load_api_example`) and a stand-in for
ComfyUI's HTTP API, served from a thread on 127.0.0.1.

:class:`ComfyApiHandler` answers the way every fake here does (quiet log, JSON or raw replies, multipart uploads
read back); each test subclasses it with the routes and the state it needs and starts it with :func:`serve`.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

API_EXAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "api_example.py"


def load_api_example() -> ModuleType:
    """``scripts/api_example.py`` as a module (scripts/ is not a package: it is loaded from its file)."""
    spec = importlib.util.spec_from_file_location("api_example", API_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ComfyApiHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def reply(self, code: int, payload, raw: bool = False) -> None:
        """Answer with ``payload`` as JSON, or as the bytes themselves when ``raw``."""
        body = payload if raw else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers["Content-Length"]))

    @staticmethod
    def uploaded_file(body: bytes) -> tuple[str, bytes]:
        """The file name and content of a one-file multipart body, as ComfyUI's ``/upload/image`` receives it."""
        marker = b'filename="'
        name = body[body.index(marker) + len(marker):].split(b'"')[0].decode()
        content = body.split(b"\r\n\r\n")[-1].rsplit(b"\r\n--", 1)[0]
        return name, content


def serve(handler: type[ComfyApiHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Start ``handler`` on a free port in a daemon thread; the server (``shutdown()`` when done) and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
