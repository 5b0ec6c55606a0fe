"""A real HTTP server on 127.0.0.1 speaking the chat-completions JSON, with scripted faults per question."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from caft.answers import LETTERS


class FakeOpenAI:
    """`script[question] = ["429", "ok"]` answers that question's 1st call with 429, its 2nd with success.
    Actions: ok, wrong, 429, 500, hang, badjson, length, 401, slow, hold (answers ok once `release` is set, or
    after `hang_s`). Unscripted calls get `default`."""

    def __init__(
        self,
        answers: dict[str, int],
        script: dict[str, list[str]] | None = None,
        default: str = "ok",
        retry_after: str = "0",
        hang_s: float = 1.0,
        slow_s: float = 0.15,
    ):
        self.answers, self.default = answers, default
        self.script = {q: list(actions) for q, actions in (script or {}).items()}
        self.retry_after, self.hang_s, self.slow_s = retry_after, hang_s, slow_s
        self.calls: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def count(self, question: str) -> int:
        return len(self.calls.get(question, []))

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next(self, question: str) -> str:
        with self.lock:
            queue = self.script.get(question) or []
            action = queue.pop(0) if queue else self.default
            self.calls[question].append((time.monotonic(), action))
            return action

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                fake.auth.add(self.headers.get("Authorization", ""))
                user = request["messages"][-1]["content"]
                question = re.search(r"Question: (.*?)\nOptions:", user, re.S).group(1)
                action = fake._next(question)
                letter = LETTERS[fake.answers.get(question, 0)]
                if action == "hold":
                    fake.release.wait(fake.hang_s)
                if action in ("hang", "slow"):
                    time.sleep(fake.hang_s if action == "hang" else fake.slow_s)
                if action == "429":
                    return self._send(429, '{"error": {"message": "rate limited"}}', {"Retry-After": fake.retry_after})
                if action == "500":
                    return self._send(500, '{"error": {"message": "upstream error"}}')
                if action == "401":
                    return self._send(401, '{"error": {"message": "Invalid API key"}}')
                if action == "badjson":
                    return self._send(200, '{"choices": [ {"message": ')
                wrong = LETTERS[(LETTERS.index(letter) + 1) % 2]
                text, finish = {
                    "length": ("Step 1: first we", "length"),
                    "wrong": (f"Thinking. So the answer is ({wrong}).", "stop"),
                }.get(action, (f"Step 1: reason.\nSo the answer is ({letter}).", "stop"))
                body = {
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    ],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 10},
                }
                self._send(200, json.dumps(body))

        return Handler
