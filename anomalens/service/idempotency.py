"""Safe retries: a client names a request with an ``Idempotency-Key`` header, and sending it again returns what
the first attempt stored instead of inspecting and storing the files again.

A key belongs to the station (its results' ``station``) and names one request: the endpoint and the bytes of
its files, in order, kept as a SHA-256 digest. The same key with other files is refused (422, as the IETF
draft "The Idempotency-Key HTTP Header Field" advises), so a client cannot mistake an old answer for a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated

from fastapi import Header, UploadFile

HEADER = "Idempotency-Key"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="any printable ASCII text without spaces (a UUID, say), new for each request: sending the "
        "request again with the same key answers what the first attempt stored instead of storing the files again",
    ),
]


def request_digest(endpoint: str, uploads: Sequence[UploadFile]) -> str:
    """SHA-256 of what a request uploads: the endpoint's name, then each file's own SHA-256, in order."""
    digest = hashlib.sha256(endpoint.encode())
    for upload in uploads:
        digest.update(hashlib.file_digest(upload.file, "sha256").digest())
        upload.file.seek(0)  # read again when it is inspected
    return digest.hexdigest()
