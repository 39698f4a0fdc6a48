"""LPP/1 frame codec: bytes in, frames out, and the size/format rules."""

from __future__ import annotations

import contextlib
import datetime
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.localpush.codec import (
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
    format_time,
)

MAX = 16384


def raw(body: bytes) -> bytes:
    """A frame with an arbitrary body, built without the codec under test."""
    return struct.pack(">I", len(body)) + body


def error_code(decoder: FrameDecoder, data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(data)
    return info.value.code


def test_decode_one_frame() -> None:
    """A complete frame yields one Frame with its type and members."""
    frames = FrameDecoder(MAX).feed(raw(b'{"type":"ping","id":"1"}'))
    assert [(f.type, f.get("id")) for f in frames] == [("ping", "1")]


def test_two_frames_in_one_write() -> None:
    """Frames concatenated in one write are all returned, in order."""
    data = raw(b'{"type":"a"}') + raw(b'{"type":"b"}')
    assert [f.type for f in FrameDecoder(MAX).feed(data)] == ["a", "b"]


def test_one_byte_writes() -> None:
    """A frame split into 1-byte writes is decoded once its last byte arrives."""
    decoder = FrameDecoder(MAX)
    data = raw(b'{"type":"hello","v":1}')
    out = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
        if i < len(data) - 1:
            assert out == []
    assert [f.type for f in out] == ["hello"]
    assert decoder.buffered == 0


def test_two_gigabyte_prefix_refused_on_header() -> None:
    """A 2 GB length is refused from the 4 header bytes; nothing is buffered."""
    decoder = FrameDecoder(MAX)
    assert error_code(decoder, struct.pack(">I", 2**31)) == "frame_too_large"
    assert decoder.buffered == 0


def test_garbage_before_hello_is_too_large() -> None:
    """An HTTP request line read as a length prefix is far over max_frame."""
    assert error_code(FrameDecoder(MAX), b"GET / HTTP/1.1\r\n") == "frame_too_large"


def test_exactly_max_frame_accepted() -> None:
    """N = max_frame is allowed."""
    body = b'{"type":"x","p":"' + b"a" * (MAX - 19) + b'"}'
    assert len(body) == MAX
    assert [f.type for f in FrameDecoder(MAX).feed(raw(body))] == ["x"]


def test_one_byte_over_max_frame() -> None:
    """N = max_frame + 1 is frame_too_large before any body byte is read."""
    decoder = FrameDecoder(MAX)
    assert error_code(decoder, struct.pack(">I", MAX + 1)) == "frame_too_large"


def test_zero_length_is_bad_frame() -> None:
    """N = 0 is bad_frame."""
    assert error_code(FrameDecoder(MAX), b"\0\0\0\0") == "bad_frame"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"type":"\xff"}', id="invalid-utf8"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'[{"type":"ping"}]', id="json-array"),
        pytest.param(b'"ping"', id="json-string"),
        pytest.param(b'{"id":"1"}', id="missing-type"),
        pytest.param(b'{"type":7}', id="non-string-type"),
        pytest.param(b'{"type":"x","n":NaN}', id="nan-constant"),
        pytest.param(b'{"type":"x","s":"\\ud800"}', id="lone-surrogate"),
        pytest.param(b'{"type":"x","n":' + b"9" * 5000 + b"}", id="huge-int"),
        pytest.param(b"[" * 8000 + b"]" * 8000, id="deep-nesting"),
        pytest.param(b'{"type":"x"', id="truncated-json"),
    ],
)
def test_bad_bodies(body: bytes) -> None:
    """Bodies that are not one UTF-8 JSON object with a string type: bad_frame."""
    assert error_code(FrameDecoder(MAX), raw(body)) == "bad_frame"


def test_unknown_members_kept() -> None:
    """Unknown members survive decoding (they are ignored, not refused)."""
    (frame,) = FrameDecoder(MAX).feed(raw(b'{"type":"ack","id":"1","x":[1]}'))
    assert frame.get("x") == [1]


def test_error_carries_frames_before_it() -> None:
    """Frames decoded before a fault in the same write are handed back with it."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(raw(b'{"type":"ack","id":"1"}') + raw(b"[]"))
    assert [f.type for f in info.value.frames] == ["ack"]


def test_decoder_refuses_input_after_error() -> None:
    """After a fault the stream cannot be resynchronised; later input re-raises."""
    decoder = FrameDecoder(MAX)
    error_code(decoder, b"\0\0\0\0")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(raw(b'{"type":"ping"}'))
    assert info.value.code == "bad_frame"
    assert info.value.frames == ()


def test_encode_is_compact_utf8() -> None:
    """Encoded frames use compact separators and raw UTF-8, not \\u escapes."""
    data = encode_frame({"type": "message", "body": "Grüße"}, MAX)
    body = '{"type":"message","body":"Grüße"}'.encode()
    assert data == struct.pack(">I", len(body)) + body


def test_encode_over_max_frame_is_local_error() -> None:
    """The server never sends a frame over max_frame: that is our own misuse."""
    with pytest.raises(LocalProtocolError):
        encode_frame({"type": "message", "body": "x" * 100}, 50)


@pytest.mark.parametrize(
    "obj",
    [{"id": "1"}, {"type": "x", "v": float("nan")}, {"type": "x", "s": "\ud800"}],
)
def test_encode_refuses_invalid_objects(obj: dict[str, object]) -> None:
    """No type, NaN, or unencodable text: LocalProtocolError, never bad bytes."""
    with pytest.raises(LocalProtocolError):
        encode_frame(obj, MAX)


def test_format_time() -> None:
    """Timestamps are ISO 8601 UTC with milliseconds and Z."""
    assert format_time(1795428000.5) == "2026-11-23T10:00:00.500Z"
    assert format_time(0.0) == "1970-01-01T00:00:00.000Z"
    # Rounded to the microsecond, then cut to the millisecond.
    assert format_time(59.9999996) == "1970-01-01T00:01:00.000Z"
    assert format_time(59.9999994) == "1970-01-01T00:00:59.999Z"
    assert format_time(4102444799.9995) == "2099-12-31T23:59:59.999Z"


def _datetime_format(t: float) -> str:
    """The reference: what ``datetime`` makes of ``t`` (to the microsecond,
    rounded half to even), cut to the millisecond."""
    dt = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@settings(max_examples=2000)
@given(
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)
    | st.builds(
        lambda s, us: s + us / 1_000_000 + 0.0000005,
        st.integers(1_700_000_000, 1_900_000_000),
        st.integers(0, 999_999),
    )
)
def test_format_time_matches_datetime(t: float) -> None:
    """The per-second cache gives datetime's answer, ties at half a
    microsecond included, for any time from 1970 to 2100."""
    assert format_time(t) == _datetime_format(t)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
frames_st = st.builds(
    lambda t, extra: {**extra, "type": t},
    st.text(min_size=1, max_size=12),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames_st, max_size=8), st.data())
def test_roundtrip_any_chunking(
    objs: list[dict[str, object]], data: st.DataObject
) -> None:
    """Encoded frames, concatenated and cut anywhere, decode to the same objects."""
    stream = b"".join(encode_frame(o, MAX) for o in objs)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    )
    decoder = FrameDecoder(MAX)
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(decoder.feed(stream[start:end]))
    assert [dict(f.body) for f in out] == [json.loads(json.dumps(o)) for o in objs]
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10), st.integers(1, 200))
def test_random_bytes_only_raise_codec_errors(
    chunks: list[bytes], max_frame: int
) -> None:
    """Arbitrary bytes in arbitrary chunks raise nothing but RemoteProtocolError."""
    decoder = FrameDecoder(max_frame)
    for chunk in chunks:
        with contextlib.suppress(RemoteProtocolError):
            decoder.feed(chunk)
        assert decoder.buffered <= 4 + max_frame
