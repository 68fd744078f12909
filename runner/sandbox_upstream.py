"""A fault-injecting upstream HTTP server for tests, demos and the 3 a.m. rehearsal.

Each path follows a script of :class:`Fault` values, one per request (a fault with ``times=n``
answers n requests); when the script is used up its last fault repeats. Unscripted paths
answer 200 with a small JSON body, except the built-in endpoints:

- ``POST /oauth/token`` issues ``tok-1``, ``tok-2``, ... (``.tokens_issued`` counts them);
- ``POST .../chat/completions`` answers like an OpenAI-compatible server;
- ``POST .../v1/messages`` answers like the Anthropic Messages API.

The two model endpoints speak their real wire formats, tool calls included. Unscripted, they play a
deterministic model (:func:`tool_policy`): call each offered tool once, then answer (an example of
the requested output schema, or an echo of the prompt). Scripted, each request takes the next
answer: :func:`model_turn` (tool calls, several per turn, broken arguments, a structured ``final``,
a refusal, ``finish_reason="length"`` ...), :func:`chat` / :func:`anthropic_message` (plain text),
or any transport fault (``status(503)``, ``html_200()``, ``reset()`` ...). The format follows the
path, so one script serves either endpoint. Before answering, a model endpoint checks the request
like the real API (an assistant tool call left without its result, an unknown forced tool ...) and
answers 400 in the provider's error shape. A script key ending in ``*`` matches every path with
that prefix (one shared script).

``echo_headers()`` answers with the request's headers, credentials included (a careless upstream).
``require_bearer()`` answers 401 unless the request's bearer token is in ``.accepted_tokens``,
which a test changes at runtime (``accept_tokens(...)``) to play an API whose credential is
rotated; ``.authorized`` lists the paths it answered 200.

    up = FaultyUpstream().start()
    up.script("/invoices/1", [rate_limit("1"), burst_503(2), ok({"amount": 10})])
    ... up.url + "/invoices/1" ...
    up.requests  # what arrived, with monotonic timestamps
    up.stop()

Instead of (or before) scripts, ``.planner`` may decide every answer: a callable
``planner(upstream, method, path, headers, body)`` returning a :class:`Fault` (or None: scripts and the
built-ins decide). The 3 a.m. rehearsal plans each answer from its seeded schedule this way.

``main(argv)`` is ``midwatch sandbox-upstream``: it serves a demo script until Ctrl-C.

Why over 500 lines: one self-contained fault-injecting server (faults, OAuth token endpoint, model
endpoints in both wire formats, request log) that tests, chaos tests and the demo start as one object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runner.providers.scripted import ScriptedUsage, Turn, WireFormat, answer, check_request, policy_turn

__all__ = [
    "Fault",
    "FaultyUpstream",
    "Planner",
    "RecordedRequest",
    "RecordedResponse",
    "anthropic_message",
    "burst_503",
    "chat",
    "echo_headers",
    "html_200",
    "main",
    "model_turn",
    "ok",
    "oversized",
    "rate_limit",
    "redirect",
    "require_bearer",
    "reset",
    "slow",
    "status",
    "tool_call",
    "tool_policy",
    "truncated_json",
    "unauthorized_until_refresh",
]

DEFAULT_HTML = (
    "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>"
    "<p>The upstream server is temporarily unavailable. Please try again later.</p></body></html>"
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted answer. Build it with the module's helpers (``ok``, ``rate_limit`` ...)."""

    kind: str
    status: int = 200
    body: Any = None  # dict/list → JSON, str/bytes → as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0
    times: int = 1
    then: Fault | None = None  # what ``slow`` finally answers
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the upstream received it; ``at`` is ``time.monotonic()`` on arrival."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float
    wall: float
    fault: str  # the kind of fault that answered it

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """A complete response the upstream sent (resets and truncated bodies are not recorded)."""

    path: str  # without the query string
    status: int
    body: bytes
    content_type: str = "application/json"
    fault: str = ""  # the kind of fault that answered (``model_turn``, ``status``, ...)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def ok(json_body: Any = None, *, times: int = 1, headers: dict[str, str] | None = None) -> Fault:
    """200 with a JSON body (default ``{"ok": true, "path": ...}``)."""
    return Fault("ok", 200, json_body, dict(headers or {}), times=times)


def status(code: int, body: Any = None, headers: dict[str, str] | None = None, *, times: int = 1,
           content_type: str = "application/json") -> Fault:
    """Any status with an optional body and headers."""
    return Fault("status", code, body if body is not None else {"error": code}, dict(headers or {}),
                 content_type, times=times)


def rate_limit(retry_after: str | float | datetime | None = "2", *, times: int = 1) -> Fault:
    """429 with ``Retry-After`` (seconds, or a datetime sent as an HTTP-date; None: no header)."""
    headers: dict[str, str] = {}
    if isinstance(retry_after, datetime):
        headers["Retry-After"] = format_datetime(retry_after.astimezone(UTC), usegmt=True)
    elif retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Fault("rate_limit", 429, {"error": "rate limited"}, headers, times=times)


def burst_503(n: int, *, retry_after: str | None = None) -> Fault:
    """``n`` consecutive 503 answers."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Fault("burst_503", 503, {"error": "unavailable"}, headers, times=n)


def html_200(body: str = DEFAULT_HTML, *, times: int = 1) -> Fault:
    """200 with an HTML page where JSON was expected (a proxy's or CDN's error page)."""
    return Fault("html_200", 200, body, {}, "text/html; charset=utf-8", times=times)


def slow(seconds: float, then: Fault | None = None, *, times: int = 1) -> Fault:
    """Wait ``seconds`` before answering with ``then`` (default ``ok()``)."""
    return Fault("slow", delay_s=seconds, then=then or ok(), times=times)


def reset(*, times: int = 1) -> Fault:
    """Close the connection (TCP RST) without any response."""
    return Fault("reset", times=times)


def truncated_json(*, honest_length: bool = False, times: int = 1) -> Fault:
    """Half a JSON document. By default ``Content-Length`` promises the whole document and the
    connection closes early; with ``honest_length`` the length matches the half (invalid JSON)."""
    return Fault("truncated_json", 200, {"items": [{"id": i, "name": f"item {i}"} for i in range(20)]},
                 times=times, options={"honest_length": honest_length})


def unauthorized_until_refresh(json_body: Any = None, *, times: int = 1) -> Fault:
    """401 unless the bearer token was issued by ``/oauth/token`` after the first one (a refresh)."""
    return Fault("unauthorized_until_refresh", 200, json_body, times=times)


def require_bearer(json_body: Any = None, *, delay_s: float = 0.0, times: int = 1) -> Fault:
    """200 (after ``delay_s``) if the bearer token is one of the upstream's ``accepted_tokens``, else 401."""
    return Fault("require_bearer", 200, json_body, delay_s=delay_s, times=times)


def echo_headers(*, times: int = 1) -> Fault:
    """200 with the request's headers as JSON (``{"path": ..., "headers": {lower-cased name: value}}``): a
    careless upstream that echoes what it received, credentials included."""
    return Fault("echo_headers", times=times)


def redirect(location: str, code: int = 302, *, times: int = 1) -> Fault:
    """A redirect to ``location``."""
    return Fault("redirect", code, b"", {"Location": location}, times=times)


def oversized(nbytes: int, *, times: int = 1) -> Fault:
    """200 with a JSON string body of about ``nbytes`` bytes."""
    return Fault("oversized", 200, "x" * max(0, nbytes - 2), times=times)


def chat(content: Any = None, *, prompt_tokens: int | None = None, completion_tokens: int | None = None,
         times: int = 1, finish_reason: str = "stop") -> Fault:
    """A plain model answer (``content`` str, or a value sent as JSON text; default: an echo of the
    prompt), in the format of the endpoint it answers. Unset token counts are estimated."""
    if finish_reason not in _FINISH_REASONS:
        raise ValueError(f"finish_reason must be one of {', '.join(_FINISH_REASONS)}")
    return Fault("chat", times=times, options={"content": content, "prompt_tokens": prompt_tokens,
                                               "completion_tokens": completion_tokens,
                                               "finish_reason": finish_reason})


def anthropic_message(text: Any = None, *, input_tokens: int | None = None, output_tokens: int | None = None,
                      times: int = 1) -> Fault:
    """A plain model answer (the same as :func:`chat`; named for scripts of ``/v1/messages``)."""
    return chat(text, prompt_tokens=input_tokens, completion_tokens=output_tokens, times=times)


def tool_call(name: str, arguments: Any = None, *, raw_arguments: str | None = None,
              id: str | None = None) -> dict[str, Any]:
    """One call for :func:`model_turn`: Midwatch or wire tool name, arguments (or raw, broken text)."""
    call: dict[str, Any] = {"name": name, "arguments": {} if arguments is None else arguments}
    if raw_arguments is not None:
        call["raw_arguments"] = raw_arguments
    if id is not None:
        call["id"] = id
    return call


def model_turn(*, tool_calls: Sequence[dict[str, Any]] = (), text: str | None = None, final: Any = ...,
               refusal: str | None = None, finish_reason: str | None = None, input_tokens: int | None = None,
               output_tokens: int | None = None, cached_input_tokens: int = 0, times: int = 1) -> Fault:
    """One scripted model turn (:class:`~runner.providers.scripted.Turn`), in the endpoint's format.

    ``tool_calls`` (build them with :func:`tool_call`) may hold several calls; ``final`` is a
    structured answer (sent through the output tool when an Anthropic request asks for one);
    ``finish_reason`` ``length`` / ``content_filter`` / ... ends the turn early.
    """
    fields: dict[str, Any] = {"tool_calls": list(tool_calls)}
    if text is not None:
        fields["text"] = text
    if final is not ...:
        fields["final"] = final
    if refusal is not None:
        fields["refusal"] = refusal
    if finish_reason is not None:
        fields["finish_reason"] = finish_reason
    if input_tokens is not None or output_tokens is not None:
        fields["usage"] = {"input_tokens": input_tokens or 0, "output_tokens": output_tokens or 0,
                           "cached_input_tokens": cached_input_tokens}
    return Fault("model_turn", times=times, options={"turn": Turn.model_validate(fields)})


def tool_policy(*, final: Any = ..., parallel: bool = True, times: int = 1) -> Fault:
    """A deterministic model: call each offered tool once (all in one turn when ``parallel``), then
    answer ``final`` (default: an example of the output schema, or an echo of the prompt)."""
    return Fault("model_policy", times=times, options={"final": final, "parallel": parallel})


@dataclass(slots=True)
class _Script:
    faults: list[Fault]
    index: int = 0
    used: int = 0

    def next(self) -> Fault:
        fault = self.faults[self.index]
        self.used += 1
        if self.used >= fault.times and self.index < len(self.faults) - 1:
            self.index += 1
            self.used = 0
        return fault


Planner = Callable[["FaultyUpstream", str, str, dict[str, str], bytes], "Fault | None"]
"""``planner(upstream, method, path without query, lower-cased headers, body)``: the answer, or None."""


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class FaultyUpstream:
    """A threaded HTTP server answering per-path fault scripts (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.responses: list[RecordedResponse] = []
        self.tokens_issued = 0
        self.accepted_tokens: frozenset[str] = frozenset()
        self.authorized: list[str] = []  # paths require_bearer answered 200
        self._scripts: dict[str, _Script] = {}
        self.planner: Planner | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultyUpstream:
        """Bind and serve in a daemon thread; returns self."""
        server_class = _ThreadingHTTPServerV6 if ":" in self.host else ThreadingHTTPServer
        server = server_class((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.upstream = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faulty-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (slow answers in progress are cut short)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (``http://[::1]:port`` on IPv6)."""
        return f"http://{self.netloc}"

    @property
    def netloc(self) -> str:
        """``host:port``, as an egress allowed-host entry (``[::1]:port`` on IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- scripting ------------------------------------------------------------------------------

    def script(self, path: str, faults: Sequence[Fault]) -> FaultyUpstream:
        """Answer requests to ``path`` (or a ``prefix*``) with ``faults`` in order; the last repeats."""
        if not faults:
            raise ValueError("a script needs at least one fault")
        with self._lock:
            self._scripts[path] = _Script(list(faults))
        return self

    def accept_tokens(self, *tokens: str) -> None:
        """From now on ``require_bearer`` accepts exactly these bearer tokens."""
        with self._lock:
            self.accepted_tokens = frozenset(tokens)

    def _authorize(self, token: str, path: str) -> bool:
        with self._lock:
            if token in self.accepted_tokens:
                self.authorized.append(path)
                return True
            return False

    def clear(self) -> None:
        """Forget every script, recorded request and issued token."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.responses.clear()
            self.authorized.clear()
            self.tokens_issued = 0

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path (without query) is ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def responses_to(self, path: str) -> list[RecordedResponse]:
        """Recorded responses to requests whose path (without query) is ``path``."""
        with self._lock:
            return [r for r in self.responses if r.path == path]

    def _record_response(self, response: RecordedResponse) -> None:
        with self._lock:
            self.responses.append(response)

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            script = self._scripts.get(path)
            if script is None:
                prefixes = [k for k in self._scripts if k.endswith("*") and path.startswith(k[:-1])]
                if prefixes:
                    script = self._scripts[max(prefixes, key=len)]
            return script.next() if script is not None else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _issue_token(self) -> str:
        with self._lock:
            self.tokens_issued += 1
            return f"tok-{self.tokens_issued}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FaultyUpstream/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    @property
    def upstream(self) -> FaultyUpstream:
        up: FaultyUpstream = self.server.upstream  # type: ignore[attr-defined]
        return up

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        planner = self.upstream.planner
        planned = planner(self.upstream, self.command, path, headers, body) if planner is not None else None
        fault = planned or self.upstream._next_fault(path) or self._builtin(path)
        self.upstream._record(RecordedRequest(
            method=self.command, path=self.path, headers=headers,
            body=body, at=time.monotonic(), wall=time.time(), fault=fault.kind))
        self._fault_kind = fault.kind
        with contextlib.suppress(OSError):  # the client gave up (timeout) or we reset the connection
            self._answer(fault, path, body)
        self.close_connection = True

    def _builtin(self, path: str) -> Fault:
        if path == "/oauth/token":
            return Fault("token")
        if path.endswith(("/chat/completions", "/v1/messages")):
            return tool_policy()
        return ok()

    def _answer(self, fault: Fault, path: str, body: bytes) -> None:
        special = {"slow": self._slow, "reset": self._reset, "token": self._token,
                   "unauthorized_until_refresh": self._until_refresh, "truncated_json": self._truncated,
                   "require_bearer": self._require_bearer, "echo_headers": self._echo_headers}
        handler = special.get(fault.kind)
        if handler is not None:
            handler(fault, path, body)
        elif fault.kind in _MODEL_KINDS:
            self._model_answer(fault, path, body)
        else:
            default = {"ok": True, "path": path}
            payload = fault.body if fault.body is not None or fault.kind != "ok" else default
            self._send(fault.status, payload, fault.headers, fault.content_type)

    def _slow(self, fault: Fault, path: str, body: bytes) -> None:
        if not self.upstream._stopping.wait(fault.delay_s):
            self._answer(fault.then or ok(), path, body)

    def _reset(self, fault: Fault, path: str, body: bytes) -> None:
        # SO_LINGER 0: close() sends a TCP RST instead of a graceful FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _token(self, fault: Fault, path: str, body: bytes) -> None:
        token = self.upstream._issue_token()
        self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _until_refresh(self, fault: Fault, path: str, body: bytes) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token.startswith("tok-") and token[4:].isdigit() and int(token[4:]) >= 2:
            self._send(200, fault.body if fault.body is not None else {"ok": True, "path": path})
        else:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            self._send(401, {"error": "invalid_token"}, challenge)

    def _require_bearer(self, fault: Fault, path: str, body: bytes) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if self.upstream._authorize(token, path):
            if fault.delay_s and self.upstream._stopping.wait(fault.delay_s):
                return
            self._send(200, fault.body if fault.body is not None else {"ok": True, "path": path})
        else:
            self._send(401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _echo_headers(self, fault: Fault, path: str, body: bytes) -> None:
        self._send(200, {"path": path, "headers": {k.lower(): v for k, v in self.headers.items()}})

    def _truncated(self, fault: Fault, path: str, body: bytes) -> None:
        data = json.dumps(fault.body).encode()
        half = data[: len(data) // 2]
        declared = len(half) if fault.options.get("honest_length") else len(data)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(declared))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(half)
        self.wfile.flush()

    def _model_answer(self, fault: Fault, path: str, body: bytes) -> None:
        fmt: WireFormat = "anthropic" if path.endswith("/v1/messages") else "openai"
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        problem = check_request(request, fmt)
        if problem is not None:
            error: dict[str, Any] = (
                {"error": {"message": problem, "type": "invalid_request_error", "param": None, "code": None}}
                if fmt == "openai" else
                {"type": "error", "error": {"type": "invalid_request_error", "message": problem}})
            self._send(400, error)
            return
        self._send(200, answer(self._turn(fault, request, fmt), request, fmt))

    @staticmethod
    def _turn(fault: Fault, request: dict[str, Any], fmt: WireFormat) -> Turn:
        opts = fault.options
        if fault.kind == "model_turn":
            turn: Turn = opts["turn"]
            return turn
        prompt = _prompt(request)
        if fault.kind == "model_policy":
            final = opts.get("final", ...)
            if final is ... and not request.get("tools") and not request.get("response_format"):
                final = f"[upstream] {prompt[:200]}"
            return policy_turn(request, fmt, final=None if final is ... else final, has_final=final is not ...,
                               parallel=bool(opts.get("parallel", True)))
        content = opts.get("content")
        text = content if isinstance(content, str) else (
            f"[upstream] {prompt[:200]}" if content is None else json.dumps(content))
        usage = ScriptedUsage(input_tokens=opts.get("prompt_tokens") or max(1, len(prompt) // 4),
                              output_tokens=opts.get("completion_tokens") or max(1, len(text) // 4))
        finish = opts.get("finish_reason", "stop")
        return Turn(text=text, usage=usage, finish_reason=finish if finish != "stop" else None)

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str) and not content_type.startswith("application/json"):
            data = payload.encode()
        else:
            data = json.dumps(payload).encode()
        self.send_response(code)
        if data or code not in (204, 304):
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        # recorded before it is sent: a client that has the answer finds it recorded
        self.upstream._record_response(RecordedResponse(self.path.split("?", 1)[0], code, data, content_type,
                                                         getattr(self, "_fault_kind", "")))
        self.wfile.write(data)
        self.wfile.flush()


_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "other")
_MODEL_KINDS = frozenset({"chat", "model_turn", "model_policy"})


def _prompt(request: dict[str, Any]) -> str:
    """The last message's text (for echo answers and token estimates)."""
    messages = request.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    content = last.get("content", "")
    if isinstance(content, list):
        return "".join(str(b.get("text", b.get("content", ""))) for b in content if isinstance(b, dict))
    return str(content or "")


def demo_script(upstream: FaultyUpstream) -> dict[str, str]:
    """Script every demo path; returns {path: what it does} for printing."""
    invoice = {"amount": 120.5, "email": "billing@example.com", "days_overdue": 12}
    paths: dict[str, tuple[list[Fault], str]] = {
        "/demo/ok": ([ok(invoice)], "always 200 JSON"),
        "/demo/rate-limited": ([rate_limit("2"), ok(invoice)], "429 Retry-After: 2, then 200"),
        "/demo/rate-limited-date": ([rate_limit(datetime.now(UTC) + timedelta(seconds=3)), ok(invoice)],
                                    "429 with an HTTP-date Retry-After, then 200"),
        "/demo/flaky": ([burst_503(2), ok(invoice)], "two 503s, then 200"),
        "/demo/html": ([html_200(), ok(invoice)], "200 text/html once, then 200 JSON"),
        "/demo/slow": ([slow(30)], "answers after 30 s (beyond any sane timeout)"),
        "/demo/reset": ([reset(), ok(invoice)], "connection reset once, then 200"),
        "/demo/truncated": ([truncated_json(), ok(invoice)], "truncated JSON once, then 200"),
        "/demo/oauth": ([unauthorized_until_refresh(invoice)], "401 until the OAuth token is refreshed"),
        "/crm/invoices/*": ([rate_limit("1"), burst_503(1), ok(invoice), html_200(), ok(invoice, times=1000)],
                            "invoice API: 429, 503, 200, HTML, then 200"),
        "/v1/chat/completions": ([burst_503(1), tool_policy()],
                                 "OpenAI-compatible: one 503, then calls each offered tool once and answers"),
        "/v1/messages": ([rate_limit("1"), tool_policy()],
                         "Anthropic Messages: one 429, then calls each offered tool once and answers"),
    }
    for path, (faults, _) in paths.items():
        upstream.script(path, faults)
    return {path: what for path, (_, what) in paths.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``midwatch sandbox-upstream [--host H] [--port P]``: serve the demo script until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="midwatch sandbox-upstream",
                                     description="Serve a fault-injecting upstream for demos and tests.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port to bind (default 8900; 0 picks one)")
    args = parser.parse_args(argv)
    upstream = FaultyUpstream(args.host, args.port).start()
    described = demo_script(upstream)
    print(f"fault-injecting upstream on {upstream.url}  (Ctrl-C to stop)")
    for path, what in described.items():
        print(f"  {path:<28} {what}")
    print("  /oauth/token                 issues tok-1, tok-2, ...")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
