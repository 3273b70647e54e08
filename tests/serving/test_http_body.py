"""Request bodies within a cap: refused by their headers, read in bounded pieces, chunked ones capped while read."""

import email.message
import io

import pytest

from lba_tf.serving.http_body import PIECE_BYTES, HttpRefusal, read_body


class _Reader(io.BytesIO):
    """A connection's reader that records the size of every read."""

    def __init__(self, data=b""):
        super().__init__(data)
        self.sizes = []

    def read(self, size=-1):
        self.sizes.append(size)
        return super().read(size)

    def readline(self, size=-1):
        self.sizes.append(size)
        return super().readline(size)


def _headers(**fields):
    headers = email.message.Message()
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            headers[name.replace("_", "-")] = one
    return headers


def _refusal(reader, headers, max_bytes=100):
    with pytest.raises(HttpRefusal) as info:
        read_body(reader, headers, max_bytes)
    return info.value.status, info.value.message


def test_a_declared_body_is_read_in_pieces_of_bounded_size():
    data = bytes(range(256)) * 1000  # 256 000 bytes: four pieces
    reader = _Reader(data)
    assert read_body(reader, _headers(Content_Length=str(len(data))), max_bytes=len(data)) == data
    assert reader.sizes == [PIECE_BYTES] * 3 + [len(data) - 3 * PIECE_BYTES]


def test_no_length_is_an_empty_body():
    reader = _Reader(b"GET / HTTP/1.1\r\n")  # the next request stays unread
    assert read_body(reader, _headers(), max_bytes=100) == b"" and reader.sizes == []


def test_a_body_declared_over_the_cap_is_refused_unread():
    reader = _Reader(b"x" * 1000)
    assert _refusal(reader, _headers(Content_Length=str(1 << 30))) == (
        413,
        "request body of 1073741824 bytes exceeds the limit of 100 bytes (the server's --max-message-mb)",
    )
    assert reader.sizes == []


@pytest.mark.parametrize("value", ["ten", "-5", "1e3", "12 34", "0x10", "٣"])
def test_a_bad_content_length_is_400(value):
    reader = _Reader(b"x" * 10)
    status, message = _refusal(reader, _headers(Content_Length=value))
    assert (status, message) == (400, f"invalid Content-Length {value!r}: expected a non-negative integer")
    assert reader.sizes == []


def test_conflicting_content_lengths_are_400():
    assert _refusal(_Reader(b"x" * 10), _headers(Content_Length=["3", "5"])) == (
        400,
        "conflicting Content-Length headers: 3, 5",
    )


def test_a_body_shorter_than_declared_is_400():
    assert _refusal(_Reader(b"abc"), _headers(Content_Length="10")) == (400, "request body ended 7 bytes early")


def test_chunked_body_is_joined_and_trailers_skipped():
    reader = _Reader(b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT")
    assert read_body(reader, _headers(Transfer_Encoding="chunked", Content_Length="999"), max_bytes=9) == b"Wikipedia"
    assert reader.read() == b"NEXT"  # the connection's next request


def test_chunked_body_is_refused_at_the_chunk_that_passes_the_cap():
    reader = _Reader(b"60\r\n" + b"a" * 0x60 + b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n")
    status, _ = _refusal(reader, _headers(Transfer_Encoding="chunked"), max_bytes=100)
    assert status == 413
    assert reader.read(4) == b"b" * 4  # 0x60 read; the chunk of 0x10 that passes 100 bytes is not


@pytest.mark.parametrize(
    "data, message",
    [
        (b"zz\r\nab\r\n0\r\n\r\n", "malformed chunk size line b'zz\\r\\n'"),
        (b"2\r\nabc\r\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"5\r\nab", "request body ended 3 bytes early"),
        (b"f" * 2000, "malformed chunk size line"),
    ],
)
def test_a_malformed_chunked_body_is_400(data, message):
    status, got = _refusal(_Reader(data), _headers(Transfer_Encoding="chunked"))
    assert status == 400 and got.startswith(message)


def test_another_transfer_coding_is_501():
    assert _refusal(_Reader(b""), _headers(Transfer_Encoding="gzip, chunked")) == (
        501,
        "Transfer-Encoding 'gzip, chunked' is not supported; send chunked or a Content-Length",
    )
