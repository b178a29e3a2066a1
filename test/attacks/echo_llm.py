#!/usr/bin/env python3
"""A hostile chat-completions endpoint for test/t/011_attacks.pl (issue #21.6).

Every POST gets a 400 whose JSON body echoes the request's Authorization
header twice, after some padding: once as it came and once JSON-escaped
the way some servers escape "/" (as "\\/"), so that a worker that cuts the
reply before redacting the key, or redacts only the exact key, stores or
logs part of it.  GET /stats gives {"requests": n}.  Binds 127.0.0.1 only,
prints "listening on PORT", stops after --max-seconds or on SIGTERM.

    echo_llm.py [--port 0] [--max-seconds 120]
"""

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

requests = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            self.reply(200, json.dumps({"requests": requests}))

    def do_POST(self):
        global requests
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with lock:
            requests += 1
        auth = self.headers.get("Authorization") or ""
        escaped = json.dumps(auth)[1:-1].replace("/", "\\/")
        # the key starts about 90 characters in: a 200-character excerpt
        # holds part of it, not all of it
        body = ('{"error": {"type": "invalid_request_error", "message": "the request was rejected '
                'because of its header", "received_authorization": "%s", "escaped": "%s"}}'
                % (json.dumps(auth)[1:-1], escaped))
        self.reply(400, body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=120)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
