"""An HTTP request body read within a size cap: refused by its headers when it declares too much, read in
bounded pieces otherwise (``Content-Length`` or ``Transfer-Encoding: chunked``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import BinaryIO

PIECE_BYTES = 64 * 1024
"""Largest single read: memory grows with the bytes that arrive, never with what a header declares."""

_MAX_LINE_BYTES = 1024
"""Longest chunk-size or trailer line accepted."""

_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


class HttpRefusal(Exception):
    """A request refused at the HTTP level, before or while its body is read; the connection closes after.

    Args:
        status: the HTTP status.
        message: what is wrong, sent as ``{"error": message}``.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _too_large(size: int | str, max_bytes: int) -> HttpRefusal:
    # 413, not 400: TF Serving's HTTP server is libevent's evhttp, which answers a body over
    # its cap with 413 Request Entity Too Large (HTTP_ENTITYTOOLARGE); TF Serving sets no cap
    # (util/net_http/server/internal/evhttp_server.cc), this server caps at --max-message-mb
    return HttpRefusal(
        413, f"request body of {size} bytes exceeds the limit of {max_bytes} bytes (the server's --max-message-mb)"
    )


def declared_length(headers: Mapping[str, str], max_bytes: int) -> int | None:
    """The body size the headers declare (``None``: chunked), checked against ``max_bytes``.

    Raises:
        HttpRefusal: 400 for a Content-Length that is not a non-negative integer (libevent's
            answer to an invalid header), or several that differ; 501 for a transfer coding
            other than chunked (RFC 9112 6.1); 413 for a declared size over ``max_bytes``.
    """
    coding = headers.get("Transfer-Encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise HttpRefusal(501, f"Transfer-Encoding {coding!r} is not supported; send chunked or a Content-Length")
        return None
    values = {value.strip() for value in headers.get_all("Content-Length") or ()}
    if len(values) > 1:
        raise HttpRefusal(400, f"conflicting Content-Length headers: {', '.join(sorted(values))}")
    if not values:
        return 0
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise HttpRefusal(400, f"invalid Content-Length {value!r}: expected a non-negative integer")
    if int(value) > max_bytes:
        raise _too_large(value, max_bytes)
    return int(value)


def read_body(rfile: BinaryIO, headers: Mapping[str, str], max_bytes: int) -> bytearray:
    """Read a request body of at most ``max_bytes``, ``PIECE_BYTES`` at a time.

    Args:
        rfile: the connection's buffered reader, positioned after the headers.
        headers: the request headers (``email.message.Message``: ``get`` and ``get_all``).
        max_bytes: largest body accepted.

    Raises:
        HttpRefusal: as :func:`declared_length`; 413 as soon as a chunked body passes
            ``max_bytes``; 400 for a malformed chunk or a body that ends early.
    """
    length = declared_length(headers, max_bytes)
    body = bytearray()
    if length is None:
        _read_chunks(rfile, body, max_bytes)
    else:
        _read_exactly(rfile, body, length)
    return body


def _read_exactly(rfile: BinaryIO, body: bytearray, size: int) -> None:
    while size > 0:
        piece = rfile.read(min(size, PIECE_BYTES))
        if not piece:
            raise HttpRefusal(400, f"request body ended {size} bytes early")
        body += piece
        size -= len(piece)


def _read_chunks(rfile: BinaryIO, body: bytearray, max_bytes: int) -> None:
    while True:
        line = rfile.readline(_MAX_LINE_BYTES)
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise HttpRefusal(400, f"malformed chunk size line {line[:40]!r}")
        size = int(match[1], 16)
        if size == 0:
            break
        if len(body) + size > max_bytes:
            raise _too_large(f"more than {max_bytes}", max_bytes)
        _read_exactly(rfile, body, size)
        if rfile.readline(_MAX_LINE_BYTES) not in (b"\r\n", b"\n"):
            raise HttpRefusal(400, "chunk data not followed by CRLF")
    for _ in range(100):  # trailer fields, ignored, up to the empty line
        line = rfile.readline(_MAX_LINE_BYTES)
        if line in (b"\r\n", b"\n", b""):
            return
    raise HttpRefusal(400, "too many trailer lines after the last chunk")
