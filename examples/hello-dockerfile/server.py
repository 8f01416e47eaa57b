"""The hello-dockerfile function as a plain HTTP server (standard library only).

plat's contract for a Dockerfile function: serve HTTP/1.1 on $PORT. Any path and
method reach this server; POST a JSON body such as {"name": "Ada"} to be greeted.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the plat gateway reuses connections
    disable_nagle_algorithm = True  # headers and body leave without a 40 ms delay

    def _greet(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = {}
        name = data.get("name") if isinstance(data, dict) else None
        body = json.dumps({"message": f"Hello, {name or 'world'}!"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _greet

    def log_message(self, format, *args):
        pass  # one line per request would flood `plat logs`


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("0.0.0.0", port), Handler)
    # As PID 1 in a container, Python would ignore SIGTERM: stop on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello-dockerfile listening on port {port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
