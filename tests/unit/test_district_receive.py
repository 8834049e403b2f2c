"""The district's checks of a batch's envelope (docs/sync.md) before anything touches the database:
a truncated or padded gzip body, a size that does not match, a key or office that does not."""

from __future__ import annotations

import gzip
import json

import pytest

from hub.district.receive import BatchError, parse, unpack

pytestmark = pytest.mark.unit
DOC = {
    "v": 1,
    "office": "ubnd-phuong-1",
    "stream": "ratings",
    "from": 10,
    "to": 12,
    "items": [{}, {}],
}
KEY = "ubnd-phuong-1:ratings:10-12"


def _status(fn, *a, **kw) -> int:
    with pytest.raises(BatchError) as e:
        fn(*a, **kw)
    return e.value.status


def test_a_whole_gzip_body_unpacks_and_a_cut_one_is_refused() -> None:
    data = json.dumps(DOC).encode()
    body = gzip.compress(data)
    assert unpack(body, encoding="gzip", content_length=str(len(body)), max_bytes=10**6) == data
    for cut in (1, 10, len(body) // 2, len(body) - 1):
        assert (
            _status(unpack, body[:cut], encoding="gzip", content_length=None, max_bytes=10**6)
            == 400
        )
    assert (
        _status(unpack, body + b"x", encoding="gzip", content_length=None, max_bytes=10**6) == 400
    )
    # A body shorter than its Content-Length (cut in transit) is refused before unzipping.
    assert (
        _status(unpack, body, encoding="gzip", content_length=str(len(body) + 5), max_bytes=10**6)
        == 400
    )
    assert _status(unpack, body, encoding="br", content_length=None, max_bytes=10**6) == 400
    big = gzip.compress(b" " * 5000)  # a small body that unzips past the limit
    assert _status(unpack, big, encoding="gzip", content_length=None, max_bytes=4096) == 413


def test_the_envelope_must_match_the_path_the_token_and_the_key() -> None:
    data = json.dumps(DOC).encode()
    b = parse(data, stream="ratings", key=KEY, office="ubnd-phuong-1")
    assert (b.start, b.to, len(b.items), len(b.sha256)) == (10, 12, 2, 64)
    assert _status(parse, data, stream="ratings", key=KEY, office="xa-khac") == 403
    assert _status(parse, data, stream="cases", key=KEY, office="ubnd-phuong-1") == 422
    assert _status(parse, data, stream="nope", key=KEY, office="ubnd-phuong-1") == 404
    assert _status(parse, data, stream="ratings", key=None, office="ubnd-phuong-1") == 422
    backwards = json.dumps({**DOC, "from": 12, "to": 10}).encode()
    assert (
        _status(
            parse,
            backwards,
            stream="ratings",
            key="ubnd-phuong-1:ratings:12-10",
            office="ubnd-phuong-1",
        )
        == 422
    )
    assert _status(parse, b"[1]", stream="ratings", key=KEY, office="ubnd-phuong-1") == 422
