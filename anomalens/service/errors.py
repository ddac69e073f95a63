"""One error body for every 4xx and 5xx answer, and the error responses each endpoint declares in the OpenAPI
spec, so that the spec lists every status code the service can give and the body that comes with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

MEANINGS = {
    400: "the body cannot be parsed (not JSON, or a broken multipart form)",
    401: "no API key, or a wrong one (only when the service has a key)",
    404: "no such stored result, model or image",
    413: "the upload, or the request body, is too large",
    422: "the request does not fit: a parameter out of range, a missing field, or a file that is not an inspectable "
    "image",
    503: "the inspection did not finish within the time limit, or the service is busy with one that did not",
}


class ErrorBody(BaseModel):
    """Every error answer: ``detail`` says what went wrong in one line; ``errors`` lists the fields a request
    failed validation on (422 answers from validation only)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


def error_responses(*codes: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of an endpoint for these status codes, each with :class:`ErrorBody`; a meaning given
    as ``e404="..."`` replaces the general one."""
    return {
        code: {"model": ErrorBody, "description": meanings.get(f"e{code}", MEANINGS[code])} for code in sorted(codes)
    }
