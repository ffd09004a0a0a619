"""Serve a saved canary model through an OpenAI-compatible chat-completions endpoint (stdlib ``http.server``).

The post-tune audit (:mod:`tunegate.core.audit.probe`) talks to the candidate model the way it talks to any
served model (vLLM, TGI, llama.cpp, a hosted API): ``POST {base}/v1/chat/completions``. This server puts the
canary classifier (:class:`tunegate.core.audit.canary.CanaryModel`) behind the same door, so the audit is
tested end to end against a real model over real HTTP.

Request convention (the fields tunegate's probe sends; anything else OpenAI defines is accepted and ignored)::

    {"model": "canary",                                  # the served name (--name); another name: 404
     "messages": [{"role": "system", "content": "<the task's instruction>"},
                  {"role": "user", "content": "<the prompt>"}],
     "metadata": {"task": "<task name>"}}                # which of the model's classifiers answers

* the **task** is ``metadata.task`` (OpenAI's free-form request metadata, which other servers ignore); without
  it, a model with a single task uses that one, and a model with several answers 400 naming its tasks;
* the **prompt** the classifier reads is ``prompt_of(system, user)`` (:func:`tunegate.core.audit.canary.prompt_of`:
  instruction, newline, input), from the last ``system`` message (the task's instruction; none when a record
  has no input) and the last ``user`` message (text, or a list of ``{"type": "text"}`` parts).

The reply is a standard ``chat.completion`` object whose one choice's ``message.content`` is the predicted
label. Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}`` with status 400, 404 or
500. ``GET /v1/models`` lists the served name; ``GET /health`` answers ``{"status": "ok"}``.

The server is single-process and threaded; it is meant for a test bench or a canary, not for production load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "canary"
DEFAULT_HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
#: A request body larger than this is refused (413): a probe prompt is a few kilobytes.
MAX_BODY_BYTES = 1 << 20


class Predictor(Protocol):
    """What the server needs of a model: its tasks and a label per prompt (``CanaryModel`` has both)."""

    def tasks(self) -> list[str]: ...

    def predict(self, task: str, prompts: Sequence[str]) -> list[str]: ...


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the OpenAI error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """What the server reads of a chat-completions request."""

    model: str
    task: str
    prompt: str


def parse_request(body: dict[str, Any], *, name: str, tasks: Sequence[str]) -> ChatRequest:
    """Validate a chat-completions request body against the served model (see the module docstring)."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required", param="model")
    if model != name:
        raise RequestError(404, f"the model {model!r} does not exist; this server serves {name!r}",
                           param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", param="messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise RequestError(400, "no user message: the prompt is the last user message's content", param="messages")
    systems = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    user = _text_content(users[-1].get("content"))
    system = _text_content(systems[-1].get("content")) if systems else ""
    prompt = f"{system}\n{user}" if system else user  # canary.prompt_of(instruction, input)
    metadata = body.get("metadata") or {}
    task = metadata.get("task") if isinstance(metadata, dict) else None
    if task is None:
        if len(tasks) != 1:
            raise RequestError(400, f"name the task in metadata.task; this model has {len(tasks)} tasks: "
                               f"{', '.join(sorted(tasks)[:20])}", param="metadata.task")
        task = tasks[0]
    if not isinstance(task, str) or task not in tasks:
        raise RequestError(404, f"this model has no task {task!r}", param="metadata.task", code="task_not_found")
    return ChatRequest(model=model, task=task, prompt=prompt)


def _text_content(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(p for p in parts if isinstance(p, str))
    raise RequestError(400, "a user message's content must be a string or a list of text parts", param="messages")


def completion(request: ChatRequest, label: str, *, created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` object answering ``request`` with ``label``; token counts are word counts."""
    digest = hashlib.sha256(f"{request.task}\0{request.prompt}".encode()).hexdigest()[:24]
    prompt_tokens, completion_tokens = len(request.prompt.split()), len(label.split())
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": label}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class ModelServer:
    """A started server for ``model`` on ``host:port`` (port 0: a free one); ``url`` is its base URL.

    Use it as a context manager (or call :meth:`close`); :meth:`serve_forever` serves in the calling thread
    (the CLI), :meth:`start` in a daemon thread (tests, notebooks).
    """

    def __init__(self, model: Predictor, *, host: str = DEFAULT_HOST, port: int = 0,
                 name: str = DEFAULT_MODEL_NAME) -> None:
        self.model = model
        self.name = name
        self.tasks = list(model.tasks())
        if self.tasks:  # the first request must not pay the model's lazy imports (seconds: sklearn, scipy)
            model.predict(self.tasks[0], [""])
        self._lock = threading.Lock()  # a model's predict need not be thread-safe
        handler = type("ChatHandler", (_ChatHandler,), {"server_model": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The completion for one request body (raises :class:`RequestError`)."""
        request = parse_request(body, name=self.name, tasks=self.tasks)
        with self._lock:
            (label,) = self.model.predict(request.task, [request.prompt])
        return completion(request, str(label))

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0,
                                            "owned_by": "tunegate"}]}

    def start(self) -> ModelServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"tunegate-serve-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChatHandler(BaseHTTPRequestHandler):
    server_model: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive: a probe sends thousands of small requests

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == MODELS_PATH:
            self._send(200, self.server_model.models())
        elif path == HEALTH_PATH:
            self._send(200, {"status": "ok", "model": self.server_model.name, "tasks": len(self.server_model.tasks)})
        else:
            self._send(404, RequestError(404, f"no route GET {path}").body())

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()
            if path != CHAT_PATH:
                raise RequestError(404, f"no route POST {path}; chat completions are at {CHAT_PATH}")
            self._send(200, self.server_model.answer(body))
        except RequestError as exc:
            self._send(exc.status, exc.body())
        except Exception as exc:  # a model error must answer 500, not drop the connection
            log.exception("serve: request failed")
            self._send(500, RequestError(500, f"{type(exc).__name__}: {exc}").body())

    def _read_json(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise RequestError(400, f"the request body is not JSON: {exc}") from None

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: %s %s", self.address_string(), format % args)


def load_model(model_dir: str | Path) -> Predictor:
    """The saved :class:`~tunegate.core.audit.canary.CanaryModel` in ``model_dir``."""
    from tunegate.core.audit.canary import CanaryModel

    return CanaryModel.load(Path(model_dir))


def serve_model(model_dir: str | Path, *, host: str = DEFAULT_HOST, port: int = 0,
                name: str = DEFAULT_MODEL_NAME) -> ModelServer:
    """A server (not yet serving: call :meth:`ModelServer.start` or :meth:`ModelServer.serve_forever`) for the
    model saved in ``model_dir``."""
    return ModelServer(load_model(model_dir), host=host, port=port, name=name)
