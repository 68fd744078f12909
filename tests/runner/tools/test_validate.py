"""Response validation: status, content type, JSON and schema — nothing unvalidated passes."""

from __future__ import annotations

import httpx
import pytest

from runner.errors import StepFailed
from runner.tools.egress import EgressResponse
from runner.tools.validate import validate_response


def resp(body: bytes, content_type: str = "application/json", status: int = 200, truncated: bool = False,
         headers: dict[str, str] | None = None) -> EgressResponse:
    all_headers = httpx.Headers({"content-type": content_type, **(headers or {})})
    return EgressResponse(status=status, headers=all_headers, body=body,
                          url="https://api.example.com/v1/x?api_key=zzz", elapsed_ms=1.0, truncated=truncated)


def test_json_and_problem_json_are_parsed() -> None:
    assert validate_response(resp(b'{"a": 1}')) == {"a": 1}
    assert validate_response(resp(b'{"a": 1}', "application/problem+json; charset=utf-8")) == {"a": 1}


def test_html_with_200_is_a_dependency_failure_showing_the_body_head_without_the_query() -> None:
    with pytest.raises(StepFailed) as info:
        validate_response(resp(b"<!doctype html>" + b"x" * 500, "text/html"))
    exc = info.value
    assert exc.category == "dependency" and exc.details["retryable"]
    assert "expected application/json, got text/html; body starts: '<!doctype html>xx" in exc.reason
    assert exc.details["body_head"].endswith("...") and len(exc.details["body_head"]) == 203
    assert "api_key" not in exc.reason  # the query string may hold credentials


def test_bearer_tokens_in_the_body_head_are_redacted() -> None:
    with pytest.raises(StepFailed) as info:
        validate_response(resp(b"<html>Authorization: Bearer abcdefghijklmnop</html>", "text/html"))
    assert "abcdefghijklmnop" not in info.value.details["body_head"]


def test_invalid_json_and_nan_are_rejected() -> None:
    with pytest.raises(StepFailed, match="invalid JSON"):
        validate_response(resp(b'{"items": [1, 2'))
    with pytest.raises(StepFailed, match="invalid JSON"):
        validate_response(resp(b'{"a": NaN}'))


def test_error_statuses_carry_category_and_retry_after() -> None:
    with pytest.raises(StepFailed) as info:
        validate_response(resp(b"{}", status=429, headers={"retry-after": "7"}))
    assert info.value.category == "dependency" and info.value.details["retry_after_s"] == 7.0
    with pytest.raises(StepFailed) as info:
        validate_response(resp(b"{}", status=403))
    assert info.value.category == "auth"


def test_schema_mismatch_names_the_json_path() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}
    with pytest.raises(StepFailed, match=r"\$\.items\[1\]") as info:
        validate_response(resp(b'{"items": [1, "two"]}'), schema=schema)
    assert not info.value.details["retryable"]


def test_truncated_bodies_are_never_parsed() -> None:
    with pytest.raises(StepFailed, match="too large"):
        validate_response(resp(b'{"a": 1}', truncated=True))


def test_without_an_expected_content_type_the_body_is_returned_as_what_it_says_it_is() -> None:
    # issue 16: expect_content_type null returned raw bytes, which no checkpoint can store (an internal error)
    assert validate_response(resp(b'{"a": 1}', "application/json"), None) == {"a": 1}
    assert validate_response(resp(b"plain words", "text/plain; charset=utf-8"), None) == "plain words"
    assert validate_response(resp(b"<a/>", "application/xml"), None) == "<a/>"
    binary = validate_response(resp(b"\x00\x01\xff", "application/octet-stream"), None)
    assert binary == {"content_type": "application/octet-stream", "size": 3, "base64": "AAH/"}
    assert validate_response(resp(b"no type", ""), None) == "no type"
    assert validate_response(resp(b"", "application/octet-stream"), None) is None
    pdf = validate_response(resp(b"%PDF-1.7", "application/pdf"), "application/pdf")
    assert isinstance(pdf, dict) and pdf["base64"] == "JVBERi0xLjc="
