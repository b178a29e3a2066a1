#!/usr/bin/env python3
"""A stub OpenAI-compatible chat-completions server for pg_triage's tests.

It answers from a gold table (the right label of each input) and can
misbehave on purpose, so that triage-worker's retries, circuit breaker and
timeouts can be tested without a real model.  Standard library only; it
binds 127.0.0.1 only.

    stub_llm.py --gold gold.jsonl [--port 0] [--mode 429:5,500:0.1] ...
    stub_llm.py --instant [--label LABEL | --gold gold.jsonl] [--port 0]

Gold file: JSON lines {"input": ..., "label": ...} (optionally "fields": {...}
to answer {"fields": ...}, and "mode": a mode this input always gets), or a
CSV file with a header row input,label.

The input is what follows the last "Input:" line of the request's last user
message (triage.build_request puts the row there), else the whole message.

Modes (--mode, comma-separated NAME[:VALUE[:SECONDS]]); a VALUE of 1 or more
without a decimal point is a count (the first N requests get it), anything
else a share of the requests:
    ok              answer right (the default)
    429:N           429 with Retry-After: 1 (--retry-after) for the first N
                    requests
    500:P           500 for a share P of the requests
    slow:P[:S]      sleep S seconds (--slow-seconds, default 5), then answer
    malformed:P     200 with a body that is not JSON
    truncated:P     Content-Length larger than the body sent, then close
    wronglabel:P    a label that is not in the gold set
    bare:P          the content is the bare label, not JSON
    401             every request (also without a matching --api-key)
--error-rate P answers a share P with another label of the gold set.

GET /stats returns the counts of requests per outcome as JSON.  GET /log
returns every chat request in order of arrival, as a JSON list of
{"t": arrival (Unix seconds, when its header was read), "input": the row's
text, "mode": the mode it got, "tokens": the usage.total_tokens of the reply
(0 if the reply had no usage)}: the worker's pace under --rps and --tpm is
read from it.  The server stops by itself after --max-seconds, and on
SIGTERM or SIGINT.

Constrained answers: a request's response_format may be {"type": "text"},
{"type": "json_object"} or {"type": "json_schema", "json_schema": {"name",
"strict", "schema"}}.  A json_schema is checked as OpenAI's structured
outputs check it in strict mode (a name of letters, digits, "_" and "-"; an
object schema whose properties are all required, additionalProperties
false, types known, enums of strings): a malformed one gets a 400 (counted
in /stats as bad_schema) and the request is not answered.  Under a valid
schema the answer conforms to it: a label outside its enum is replaced by
the enum's first value (counted as schema_clamped; not in mode wronglabel,
a server that breaks its schema on purpose), and a fields schema gets
every field, null where the gold row has none.  Each /log entry carries the
request's response_format ("response_format", null if none).

The Batch API: POST /v1/files (multipart: purpose "batch" and a JSONL file
of {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}),
POST /v1/batches ({"input_file_id", "endpoint", "completion_window": "24h"}),
GET /v1/batches/ID, GET /v1/files/ID/content.  A batch is validating, then
in_progress, and completes --batch-delay seconds after its creation; then
every line is answered as a chat request would be (logged in /log with
"via": "batch") into the output file.  --batch-fail N: the first N batches
fail (validation errors, no files); --batch-expire N: the next N expire
after the delay, the first half of their lines answered and the rest in the
error file as batch_expired; --batch-error-lines N: the first N lines of
each completed batch go to the error file with a 500.  /stats counts
files_uploaded, batches_created, batch_polls, batch_lines and
content_downloads.

An input that is not in the gold file is answered with the first gold label
in sorted order (a test whose gold file misses rows would otherwise not
notice); every request with such an input, whatever its mode, counts in
/stats as unknown_input, the first 10 inputs are listed there as
unknown_examples (cut to 200 characters), and each is logged to stderr.
Tests whose inputs are all in the gold file assert unknown_input is 0.

--instant: the benchmark's endpoint (test/bench/worker.sh).  Every POST to
/v1/chat/completions gets the same 200 reply, {"label": LABEL} (--label, else
the first gold label in sorted order), built once at start.  The request is
not parsed beyond its header (a body needs a Content-Length: no chunked
uploads), nothing is logged, connections are kept alive.  It runs on
asyncio's protocol callbacks, not http.server's thread per connection: on
2 cores it answers about 15,000 requests/s from 32 connections, where
http.server answers 2,000.  It takes no --mode, --error-rate or --verbose;
--api-key is checked.  GET /stats gives requests, connections and
max_connections.
"""

import argparse
import asyncio
import csv
import email.parser
import email.policy
import json
import hashlib
import random
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "429", "500", "slow", "malformed", "truncated", "wronglabel", "bare", "401")


def load_gold(path):
    """Returns {input: row} where row has label and maybe fields and mode."""
    gold = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".csv") or not text.lstrip().startswith("{"):
        for row in csv.DictReader(text.splitlines()):
            gold[row["input"].strip()] = {"label": row["label"]}
    else:
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                gold[row["input"].strip()] = row
    if not gold:
        sys.exit("stub_llm: the gold file has no rows")
    return gold


def parse_modes(spec, slow_seconds):
    """[(name, kind, value, seconds)]: kind is 'count', 'share' or 'all'."""
    modes = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        name = parts[0]
        if name not in MODES:
            sys.exit(f"stub_llm: unknown mode {name!r} (one of {', '.join(MODES)})")
        seconds = float(parts[2]) if len(parts) > 2 else slow_seconds
        if name in ("ok", "401") and len(parts) == 1:
            modes.append((name, "all", 1.0, seconds))
        elif len(parts) == 1:
            sys.exit(f"stub_llm: mode {name} needs a count or a share, e.g. {name}:0.2")
        elif "." not in parts[1] and int(parts[1]) >= 1:
            modes.append((name, "count", int(parts[1]), seconds))
        else:
            modes.append((name, "share", float(parts[1]), seconds))
    return modes


def words(text):
    return len(str(text).split())


class Stub:
    """The state shared by the handler threads."""

    def __init__(self, args):
        self.args = args
        self.gold = load_gold(args.gold)
        self.labels = sorted({row["label"] for row in self.gold.values() if "label" in row})
        self.modes = parse_modes(args.mode, args.slow_seconds)
        self.random = random.Random(args.seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "models": {},
                      "unknown_input": 0, "unknown_examples": [], "wrong": 0, "bad_request": 0}
        for m in MODES:
            self.stats[m] = 0
        self.count_used = {}
        self.log = []
        for key in ("bad_schema", "schema_clamped", "files_uploaded", "batches_created",
                    "batch_polls", "batch_lines", "content_downloads"):
            self.stats[key] = 0
        self.files = {}     # id: {"bytes", "filename", "purpose"}
        self.batches = {}   # id: the batch object, plus "_created", "_fate"
        self.batch_fates = ["failed"] * args.batch_fail + ["expired"] * args.batch_expire

    def pick(self, row):
        """The mode of this request (and its seconds), counting it."""
        with self.lock:
            self.requests += 1
            if row is not None and row.get("mode"):
                return row["mode"], self.args.slow_seconds
            draw = self.random.random()
            cumulative = 0.0
            for name, kind, value, seconds in self.modes:
                if kind == "all":
                    return name, seconds
                if kind == "count":
                    used = self.count_used.get(name, 0)
                    if used < value:
                        self.count_used[name] = used + 1
                        return name, seconds
                    continue
                cumulative += value
                if draw < cumulative:
                    return name, seconds
            return "ok", self.args.slow_seconds

    def unknown(self, text):
        """Counts and logs a request whose input is not in the gold file."""
        with self.lock:
            self.stats["unknown_input"] += 1
            if len(self.stats["unknown_examples"]) < 10:
                self.stats["unknown_examples"].append(text[:200])
        sys.stderr.write("stub_llm: input not in the gold file: %r\n" % text[:200])

    def count(self, key, by=1):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + by

    def wrong(self, text):
        """Whether to answer text wrongly: drawn from a hash of the seed and
        the text, so the same rows get wrong answers whatever the order or
        concurrency of the requests."""
        digest = hashlib.sha256(f"{self.args.seed}:{text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < self.args.error_rate


def find_input(messages):
    """The row's text in the last user message, and that message."""
    content = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    marker = "Input:\n"
    at = content.rfind(marker)
    if at >= 0:
        return content[at + len(marker):].strip(), content
    return content.strip(), content


SCHEMA_TYPES = ("object", "string", "number", "integer", "boolean", "array", "null")


def schema_error(node, path="schema"):
    """Why a strict json_schema node is malformed, or None."""
    if not isinstance(node, dict):
        return f"{path} is not an object"
    types = node.get("type")
    if "enum" in node:
        enum = node["enum"]
        if not isinstance(enum, list) or not enum or not all(isinstance(x, str) for x in enum):
            return f"{path}.enum must be a non-empty list of strings"
    if types is None and "enum" not in node:
        return f"{path} has no type"
    for t in (types if isinstance(types, list) else [types] if types is not None else []):
        if t not in SCHEMA_TYPES:
            return f"{path}.type {t!r} is unknown"
    if types == "object" or (isinstance(types, list) and "object" in types):
        props = node.get("properties")
        if not isinstance(props, dict):
            return f"{path}.properties must be an object"
        if node.get("additionalProperties") is not False:
            return f"{path}.additionalProperties must be false in strict mode"
        required = node.get("required")
        if not isinstance(required, list) or sorted(required) != sorted(props):
            return f"{path}.required must list every property in strict mode"
        for name, sub in props.items():
            err = schema_error(sub, f"{path}.properties.{name}")
            if err:
                return err
    if types == "array" and "items" in node:
        return schema_error(node["items"], f"{path}.items")
    return None


def response_format_error(fmt):
    """Why a request's response_format is malformed, or None."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        return "response_format.type must be text, json_object or json_schema"
    if fmt["type"] != "json_schema":
        return None
    js = fmt.get("json_schema")
    if not isinstance(js, dict) or not isinstance(js.get("name"), str) \
            or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", js["name"]):
        return "response_format.json_schema needs a name of letters, digits, _ and -"
    if js.get("strict") is not True:
        return "response_format.json_schema.strict must be true"
    schema = js.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "response_format.json_schema.schema must be an object schema"
    return schema_error(schema)


def conform(stub, fmt, answer_obj):
    """The answer made to fit a valid json_schema response_format."""
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return answer_obj
    props = fmt["json_schema"]["schema"]["properties"]
    if "label" in props and isinstance(answer_obj, dict) and "label" in answer_obj:
        enum = props["label"].get("enum")
        if enum and answer_obj["label"] not in enum:
            stub.count("schema_clamped")
            return {"label": enum[0]}
    if "fields" in props:
        names = props["fields"].get("properties", {})
        have = answer_obj.get("fields", {}) if isinstance(answer_obj, dict) else {}
        return {"fields": {n: have.get(n) if isinstance(have, dict) else None for n in names}}
    return answer_obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "stub_llm/1"

    def log_message(self, fmt, *args):
        if self.server.stub.args.verbose:
            sys.stderr.write("stub_llm: " + (fmt % args) + "\n")

    def send_json(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error_reply(self, status, message, kind, headers=()):
        self.send_json(status, {"error": {"message": message, "type": kind}}, headers)

    def do_GET(self):
        stub = self.server.stub
        if self.path.rstrip("/") == "/stats":
            with stub.lock:
                self.send_json(200, stub.stats)
        elif self.path.rstrip("/") == "/log":
            with stub.lock:
                self.send_json(200, stub.log)
        elif re.fullmatch(r"/v1/batches/[A-Za-z0-9_-]+", self.path.rstrip("/")):
            self.get_batch(stub, self.path.rstrip("/").rsplit("/", 1)[1])
        elif re.fullmatch(r"/v1/files/[A-Za-z0-9_-]+/content", self.path):
            fid = self.path.split("/")[3]
            with stub.lock:
                f = stub.files.get(fid)
                stub.stats["content_downloads"] += 1
            if f is None:
                self.error_reply(404, f"no file {fid}", "invalid_request_error")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(f["bytes"])))
            self.end_headers()
            self.wfile.write(f["bytes"])
        elif self.path.rstrip("/") in ("/v1/models", "/models"):
            self.send_json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        else:
            self.error_reply(404, "not found", "invalid_request_error")

    def do_POST(self):
        stub = self.server.stub
        arrival = time.time()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
        except (ValueError, OSError):
            self.close_connection = True
            return
        if self.path.rstrip("/") == "/v1/files":
            self.post_file(stub, raw)
            return
        if self.path.rstrip("/") == "/v1/batches":
            self.post_batch(stub, raw)
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self.error_reply(404, f"no route {self.path}", "invalid_request_error")
            return
        stub.count("in_flight")
        with stub.lock:
            stub.stats["max_in_flight"] = max(stub.stats["max_in_flight"], stub.stats["in_flight"])
        try:
            self.chat(stub, raw, arrival)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            stub.count("in_flight", -1)

    def chat(self, stub, raw, arrival):
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        status, obj, headers, body = respond(stub, req, self.headers.get("Authorization", ""),
                                             arrival, "chat")
        if body is not None:
            # a broken reply, on purpose
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + (100 if obj == "truncated" else 0)))
            self.end_headers()
            self.wfile.write(body)
            if obj == "truncated":
                self.wfile.flush()
                self.close_connection = True
            return
        self.send_json(status, obj, headers)

    # -- the Batch API ---------------------------------------------------------

    def post_file(self, stub, raw):
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            self.error_reply(400, "POST /v1/files takes multipart/form-data", "invalid_request_error")
            return
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw)
        purpose, data, filename = None, None, None
        for part in msg.iter_parts() if msg.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            if name == "purpose":
                purpose = part.get_payload(decode=True).decode()
            elif name == "file":
                data = part.get_payload(decode=True)
                filename = part.get_filename()
        if purpose != "batch" or data is None:
            self.error_reply(400, "a file needs purpose batch and a file part", "invalid_request_error")
            return
        ids = set()
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            try:
                item = json.loads(line)
                ok = (isinstance(item.get("custom_id"), str) and item.get("method") == "POST"
                      and item.get("url") == "/v1/chat/completions" and isinstance(item.get("body"), dict)
                      and item["custom_id"] not in ids)
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                self.error_reply(400, f"line {n} of the file is not a batch request", "invalid_request_error")
                return
            ids.add(item["custom_id"])
        with stub.lock:
            fid = f"file-stub{len(stub.files) + 1}"
            stub.files[fid] = {"bytes": data, "filename": filename, "purpose": "batch"}
            stub.stats["files_uploaded"] += 1
        self.send_json(200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                             "filename": filename, "purpose": "batch"})

    def post_batch(self, stub, raw):
        try:
            req = json.loads(raw)
            fid = req["input_file_id"]
            if req.get("endpoint") != "/v1/chat/completions" or req.get("completion_window") != "24h":
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.error_reply(400, "a batch needs input_file_id, endpoint /v1/chat/completions and"
                             " completion_window 24h", "invalid_request_error")
            return
        with stub.lock:
            if fid not in stub.files:
                self.error_reply(400, f"no file {fid}", "invalid_request_error")
                return
            bid = f"batch_stub{len(stub.batches) + 1}"
            fate = stub.batch_fates.pop(0) if stub.batch_fates else "completed"
            batch = {"id": bid, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                     "input_file_id": fid, "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                     "metadata": req.get("metadata"), "request_counts": {"total": 0, "completed": 0, "failed": 0},
                     "_created": time.time(), "_fate": fate, "_auth": self.headers.get("Authorization", "")}
            stub.batches[bid] = batch
            stub.stats["batches_created"] += 1
        self.send_json(200, public_batch(batch))

    def get_batch(self, stub, bid):
        with stub.lock:
            batch = stub.batches.get(bid)
            stub.stats["batch_polls"] += 1
        if batch is None:
            self.error_reply(404, f"no batch {bid}", "invalid_request_error")
            return
        with stub.lock:
            if batch["status"] in ("validating", "in_progress"):
                age = time.time() - batch["_created"]
                if batch["_fate"] == "failed":
                    batch["status"] = "failed"
                    batch["errors"] = {"object": "list", "data": [
                        {"code": "invalid_request", "message": "the stub fails this batch on purpose"}]}
                elif age >= stub.args.batch_delay:
                    run_batch(stub, batch)
                elif age >= stub.args.batch_delay / 4:
                    batch["status"] = "in_progress"
            reply = public_batch(batch)
        self.send_json(200, reply)


def public_batch(batch):
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def run_batch(stub, batch):
    """Answers every line of a batch (the stub's lock held): output and error files."""
    lines = stub.files[batch["input_file_id"]]["bytes"].decode("utf-8").splitlines()
    out, err = [], []
    expire_from = len(lines) // 2 if batch["_fate"] == "expired" else len(lines)
    for n, line in enumerate(lines):
        item = json.loads(line)
        cid = item["custom_id"]
        if n >= expire_from:
            err.append({"id": f"batch_req_{n}", "custom_id": cid, "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
            continue
        if n < stub.args.batch_error_lines:
            err.append({"id": f"batch_req_{n}", "custom_id": cid,
                        "response": {"status_code": 500, "request_id": f"req_{n}",
                                     "body": {"error": {"message": "The server had an error.", "type": "server_error"}}},
                        "error": None})
            continue
        stub.lock.release()
        try:
            status, obj, _, body = respond(stub, item["body"], batch["_auth"], time.time(), "batch")
        finally:
            stub.lock.acquire()
        stub.stats["batch_lines"] += 1
        if body is not None:
            obj = {"error": {"message": "broken reply", "type": "server_error"}}
            status = 500
        target = out if status == 200 else err
        target.append({"id": f"batch_req_{n}", "custom_id": cid,
                       "response": {"status_code": status, "request_id": f"req_{n}", "body": obj},
                       "error": None})
    for kind, rows in (("output_file_id", out), ("error_file_id", err)):
        if rows:
            fid = f"file-stub{len(stub.files) + 1}"
            stub.files[fid] = {"bytes": "".join(json.dumps(r) + "\n" for r in rows).encode(),
                               "filename": f"{batch['id']}_{kind}.jsonl", "purpose": "batch_output"}
            batch[kind] = fid
    batch["status"] = "expired" if batch["_fate"] == "expired" else "completed"
    batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}


def respond(stub, req, auth, arrival, via):
    """The reply to one chat request (a dict, or None if the body was no
    JSON): (status, object, headers, raw body or None).  A raw body is a
    broken reply on purpose; its object is then the mode's name."""
    stub.count("requests")
    entry = {"t": arrival, "input": None, "mode": "bad_request", "tokens": 0,
             "response_format": None, "via": via}
    with stub.lock:
        stub.log.append(entry)
    args = stub.args
    try:
        messages = req["messages"]
        model = req["model"]
        if not isinstance(model, str) or not isinstance(messages, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        stub.count("bad_request")
        return 400, {"error": {"message": "the body needs a model and messages",
                               "type": "invalid_request_error"}}, (), None
    with stub.lock:
        stub.stats["models"][model] = stub.stats["models"].get(model, 0) + 1
    fmt = req.get("response_format")
    entry["response_format"] = fmt
    why = response_format_error(fmt)
    if why is not None:
        stub.count("bad_schema")
        entry["mode"] = "bad_schema"
        return 400, {"error": {"message": "Invalid schema for response_format: " + why,
                               "type": "invalid_request_error"}}, (), None

    text, content = find_input(messages)
    entry["input"] = text
    row = stub.gold.get(text) or stub.gold.get(content.strip())
    if row is None:
        stub.unknown(text)
    # a refused request uses up none of the counted modes
    if args.api_key is not None and auth != f"Bearer {args.api_key}":
        mode, seconds = "401", 0
    else:
        mode, seconds = stub.pick(row)
    stub.count(mode)
    entry["mode"] = mode

    if mode == "401":
        return 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}, (), None
    if mode == "429":
        return 429, {"error": {"message": "Rate limit reached, try again later.", "type": "rate_limit_error"}}, \
            [("Retry-After", str(args.retry_after))], None
    if mode == "500":
        return 500, {"error": {"message": "The server had an error.", "type": "server_error"}}, (), None
    if mode == "slow":
        time.sleep(seconds)
    if mode == "malformed":
        return 200, "malformed", (), b'{"choices": [{"message": {"content": "{\\"label\\": '

    if row is None:
        label = stub.labels[0]
    else:
        label = row.get("label")
    if label is not None and stub.wrong(text) and len(stub.labels) > 1:
        stub.count("wrong")
        others = sorted(x for x in stub.labels if x != label)
        label = others[hashlib.sha256(text.encode()).digest()[0] % len(others)]
    if mode == "wronglabel":
        label = "not-a-label-" + str(stub.requests)
    if mode == "bare":
        answer = str(label)
    elif row is not None and row.get("fields") is not None:
        answer = json.dumps(conform(stub, fmt, {"fields": row["fields"]}))
    elif mode == "wronglabel":
        # a server that breaks its schema on purpose
        answer = json.dumps({"label": label})
    else:
        answer = json.dumps(conform(stub, fmt, {"label": label}))

    prompt_tokens = round(sum(words(m.get("content", "")) for m in messages
                              if isinstance(m, dict)) * 1.3)
    completion_tokens = max(1, round(words(answer) * 1.3))
    reply = {
        "id": f"chatcmpl-stub-{stub.requests}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    entry["tokens"] = prompt_tokens + completion_tokens
    if mode == "truncated":
        body = json.dumps(reply).encode()
        return 200, "truncated", (), body[: len(body) // 2]
    return 200, reply, (), None


class InstantProtocol(asyncio.Protocol):
    """One keep-alive connection of the --instant server: every request gets
    the precomputed reply as soon as its body is in."""

    def __init__(self, server):
        self.server = server
        self.buf = bytearray()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        srv = self.server
        srv.connections += 1
        srv.stats["connections"] += 1
        if srv.connections > srv.stats["max_connections"]:
            srv.stats["max_connections"] = srv.connections

    def connection_lost(self, exc):
        self.server.connections -= 1

    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.transport.close()
                return
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                try:
                    length = int(head[at + 17:stop if stop >= 0 else len(head)])
                except ValueError:
                    self.transport.close()
                    return
            if len(buf) < end + 4 + length:
                return
            raw_head = bytes(buf[:end])
            del buf[:end + 4 + length]
            self.transport.write(self.server.answer(raw_head, head))
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


class InstantServer:
    """The replies of --instant, as bytes built once."""

    def __init__(self, args, label):
        self.connections = 0
        self.stats = {"requests": 0, "instant": 0, "401": 0, "not_found": 0,
                      "connections": 0, "max_connections": 0}
        self.auth = None
        if args.api_key is not None:
            self.auth = f"Bearer {args.api_key}".encode()
        content = json.dumps({"label": label})
        reply = json.dumps({
            "id": "chatcmpl-stub-instant", "object": "chat.completion", "created": int(time.time()),
            "model": "stub-instant",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 5, "total_tokens": 65}})
        self.ok = self.response(200, reply)
        self.unauthorized = self.response(401, json.dumps(
            {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}))
        self.not_found = self.response(404, json.dumps(
            {"error": {"message": "not found", "type": "invalid_request_error"}}))

    @staticmethod
    def response(status, body):
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}[status]
        body = body.encode()
        return (f"HTTP/1.1 {status} {reason}\r\nServer: stub_llm/1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    def answer(self, raw_head, head):
        """The reply bytes to a request whose header (without the final blank
        line) is raw_head, and head in lower case."""
        line_end = head.find(b"\r\n")
        request_line = raw_head[:line_end if line_end >= 0 else len(raw_head)].split()
        method = request_line[0] if request_line else b""
        path = request_line[1].split(b"?")[0].rstrip(b"/") if len(request_line) > 1 else b""
        if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
            self.stats["requests"] += 1
            if self.auth is not None and not self.authorized(raw_head):
                self.stats["401"] += 1
                return self.unauthorized
            self.stats["instant"] += 1
            return self.ok
        if method == b"GET" and path == b"/stats":
            return self.response(200, json.dumps(self.stats))
        self.stats["not_found"] += 1
        return self.not_found

    def authorized(self, raw_head):
        """Whether the Authorization header is exactly Bearer KEY (the header
        name in any case, the key as given)."""
        for line in raw_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                return value.strip() == self.auth
        return False


def serve_instant(args):
    if args.label is not None:
        label = args.label
    elif args.gold is not None:
        labels = sorted({row["label"] for row in load_gold(args.gold).values() if "label" in row})
        if not labels:
            sys.exit("stub_llm: the gold file has no labels")
        label = labels[0]
    else:
        sys.exit("stub_llm: --instant needs --label or --gold")
    if args.mode != "ok" or args.error_rate or args.verbose:
        sys.exit("stub_llm: --instant answers every request alike: no --mode, --error-rate or --verbose")

    async def run():
        loop = asyncio.get_running_loop()
        instant = InstantServer(args, label)
        server = await loop.create_server(lambda: InstantProtocol(instant), "127.0.0.1",
                                          args.port, backlog=1024)
        print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, done.set)
        loop.add_signal_handler(signal.SIGINT, done.set)
        try:
            await asyncio.wait_for(done.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            pass
        server.close()

    asyncio.run(run())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0: pick one and print it")
    p.add_argument("--gold", help="JSON lines or CSV of input,label (required unless --instant)")
    p.add_argument("--mode", default="ok", help="comma-separated modes, see above")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of wrong labels")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--retry-after", default="1", help="the Retry-After of a 429")
    p.add_argument("--api-key", help="require Authorization: Bearer KEY")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--verbose", action="store_true", help="log each request to stderr")
    p.add_argument("--instant", action="store_true",
                   help="answer every request at once with the same label (benchmarks)")
    p.add_argument("--label", help="the label of --instant (default: the first gold label)")
    p.add_argument("--batch-delay", type=float, default=1.0,
                   help="seconds from a batch's creation to its end")
    p.add_argument("--batch-fail", type=int, default=0, help="the first N batches fail")
    p.add_argument("--batch-expire", type=int, default=0, help="the next N batches expire")
    p.add_argument("--batch-error-lines", type=int, default=0,
                   help="the first N lines of each completed batch get a 500 in the error file")
    args = p.parse_args()
    if args.instant:
        serve_instant(args)
        return
    if args.gold is None:
        p.error("--gold is required (unless --instant)")

    stub = Stub(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.stub = stub
    print(f"listening on {server.server_address[1]}", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    done.wait(args.max_seconds)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
