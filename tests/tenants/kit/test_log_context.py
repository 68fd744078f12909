"""Context is bound once per unit of work and every line under it carries it; JSON in production, including
the lines of standard-library loggers (Dramatiq, uvicorn); redaction still applies to all of them."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import secrets
import threading
from collections.abc import Iterator

import pytest
import structlog

from tenants.kit.logging import (
    REDACTED,
    annotate_request,
    bind_work,
    configure_logging,
    get_logger,
    register_secret,
    request_context,
    unbind_work,
)
from tenants.kit.settings import Settings


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """JSON logging into a buffer (structlog and the standard library alike)."""
    stream = io.StringIO()
    configure_logging("info", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
    root = logging.getLogger()
    ours = next(h for h in root.handlers if h.get_name() == "midwatch")
    assert isinstance(ours, logging.StreamHandler)
    ours.setStream(stream)
    yield stream
    configure_logging("warning", "console")


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_fields_bound_for_a_unit_of_work_are_on_every_line_under_it_and_gone_after(lines: io.StringIO) -> None:
    log = get_logger("engine")
    with bind_work(tenant_id="tnt_1", run_id="run_1", agent="greeter"):
        log.info("run_started")
        with bind_work(item=3, step="draft", attempt=2):
            log.warning("step_failed", reason="rule rejected the output")
            with bind_work(failure_category="validation"):
                logging.getLogger("dramatiq.worker").error("a library line")
            unbind_work("attempt")
            log.info("retrying")
        log.info("run_handed_back")
    log.info("idle")
    started, failed, library, retrying, handed_back, idle = _read(lines)
    assert started["tenant_id"] == "tnt_1" and started["run_id"] == "run_1" and "step" not in started
    assert failed["item"] == 3 and failed["step"] == "draft" and failed["attempt"] == 2 and failed["run_id"] == "run_1"
    assert library["failure_category"] == "validation" and library["logger"] == "dramatiq.worker"
    assert library["level"] == "error" and library["run_id"] == "run_1"
    assert "attempt" not in retrying and retrying["step"] == "draft"
    assert "step" not in handed_back and handed_back["run_id"] == "run_1"
    assert not {"tenant_id", "run_id", "agent"} & idle.keys()


def test_only_the_documented_fields_can_be_bound() -> None:
    with pytest.raises(ValueError, match="not a log context field"), bind_work(run=1):
        pass
    with pytest.raises(ValueError, match="not a log context field"):
        annotate_request(user="x")


def test_a_tenant_found_in_a_worker_thread_shows_in_the_requests_later_lines(lines: io.StringIO) -> None:
    with request_context("req-1"):
        ctx = contextvars.copy_context()  # how a sync dependency runs: in a thread, on a copy of the context
        thread = threading.Thread(target=ctx.run, args=(annotate_request,), kwargs={"tenant_id": "tnt_9"})
        thread.start()
        thread.join()
        get_logger("api").info("handled")
    get_logger("api").info("next request")
    handled, after = _read(lines)
    assert handled["request_id"] == "req-1" and handled["tenant_id"] == "tnt_9"
    assert "request_id" not in after and "tenant_id" not in after


def test_library_lines_are_json_and_redacted_too(lines: io.StringIO) -> None:
    value = f"lib-secret-{secrets.token_hex(6)}"
    register_secret([value])
    logging.getLogger("uvicorn.error").warning("connection from %s failed", value)
    (line,) = _read(lines)
    assert line["event"] == f"connection from {REDACTED} failed" and value not in lines.getvalue()


def test_json_is_the_production_default_and_console_the_embedded_one() -> None:
    assert Settings(env="embedded").effective_log_format == "console"
    production = Settings.model_construct(env="production", log_format=None)  # (production also needs services)
    assert production.effective_log_format == "json"
    assert Settings(log_format="json").effective_log_format == "json"


def test_a_stream_closed_after_logging_was_configured_does_not_break_later_log_calls(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Logging writes to sys.stderr as it is at each call: configured while a stream that is closed since was
    sys.stderr (a test's capture, an embedding application's redirect), a log call still works."""
    gone = io.StringIO()
    monkeypatch.setattr("sys.stderr", gone)
    configure_logging("info", "json")
    monkeypatch.undo()  # back to pytest's stream
    gone.close()
    get_logger("t").warning("after_the_stream_closed", n=1)  # raised ValueError (I/O on a closed file) before
    logging.getLogger("stdlib.t").warning("stdlib too")
    err = capsys.readouterr().err
    assert "after_the_stream_closed" in err and "stdlib too" in err
