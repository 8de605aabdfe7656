#!/usr/bin/env python3
"""A tiny HTTP/1.1 target for scripts/cluster-up.sh (loopback only, keep-alive).

Paths follow the load-test fleet's (docs/loadtest.md), so either can serve the same config:
  /ok               200 "ok"
  /status/NNN       that status (200-599)
  /flap/PERIOD_MS   200 when floor(unix_ms / PERIOD_MS) is even, 500 when odd: every probe
                    sees the same phase, so a flapping service changes state every PERIOD_MS
  anything else     404

Usage: cluster-target.py PORT (binds 127.0.0.1:PORT, prints one line when listening).
"""
import http.server
import signal
import sys
import time


def answer(path):
    """The (status, body) for a request path (the query string is ignored)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    try:
        if parts == ["ok"] or parts == [""]:
            return 200, b"ok"
        if len(parts) == 2 and parts[0] == "status":
            code = int(parts[1])
            if 200 <= code <= 599:
                return code, str(code).encode()
        if len(parts) == 2 and parts[0] == "flap":
            period = int(parts[1])
            if period > 0:
                odd = (time.time_ns() // 1_000_000 // period) % 2
                return (500, b"flap") if odd else (200, b"ok")
    except ValueError:
        return 400, b"bad argument"
    return 404, b"not found"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ringwatch's prober expects

    def reply(self, with_body):
        code, body = answer(self.path)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.reply(True)

    def do_HEAD(self):
        self.reply(False)

    def log_message(self, *_args):
        pass  # one line per probe would flood the log


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: cluster-target.py PORT", file=sys.stderr)
        sys.exit(2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    # SIGTERM (cluster-down.sh) ends it quietly, like SIGINT.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"cluster-target: listening on 127.0.0.1:{sys.argv[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
