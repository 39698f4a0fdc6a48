"""FastDecoder: the same fields, table and errors as ``hpack.Decoder``.

Every block is decoded by both decoders in lockstep (each with its own
dynamic table), so any drift in the tables shows in a later block. Blocks come
from hpack's own encoder (incremental indexing, Huffman, evictions, table size
changes), from hand-written wire samples of RFC 7541 appendix C, and from
random bytes, for which both must fail with the same error class.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hpack.exceptions import (
    HPACKDecodingError,
    HPACKError,
    InvalidTableIndex,
    OversizedHeaderListError,
)
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http2._connection import ClientConnection, ResponseHeaders
from gateway.http2._hpack import FastDecoder

# RFC 7541 C.3: three requests without Huffman coding, sharing a dynamic table.
RFC7541_C3 = [
    bytes.fromhex("828684410f7777772e6578616d706c652e636f6d"),
    bytes.fromhex("828684be58086e6f2d6361636865"),
    bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
]
RFC7541_C3_FIELDS = [
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]


HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def outcome(decoder: hpack.Decoder, block: bytes) -> object:
    """Fields with their tuple types (never-indexed matters), or the error class."""
    try:
        return [
            (type(h).__name__, bytes(h[0]), bytes(h[1]))
            for h in decoder.decode(block, raw=True)
        ]
    except HPACKError as e:
        return type(e)


def test_rfc7541_c3_requests_share_the_dynamic_table() -> None:
    """The RFC's sample blocks decode to its fields, block after block."""
    decoder = FastDecoder()
    for block, fields in zip(RFC7541_C3, RFC7541_C3_FIELDS, strict=True):
        assert [tuple(h) for h in decoder.decode(block, raw=True)] == fields
    assert len(decoder.header_table.dynamic_entries) == 3


def test_errors_are_hpacks_own() -> None:
    """Bad indexes, a misplaced size update and an oversized list fail as in hpack."""
    assert outcome(FastDecoder(), b"\x80") is InvalidTableIndex  # index 0
    assert outcome(FastDecoder(), b"\xbe") is InvalidTableIndex  # empty dynamic table
    assert outcome(FastDecoder(), b"\xff\x10") is InvalidTableIndex  # 142, two bytes
    assert outcome(FastDecoder(), b"\x88\x20") is HPACKDecodingError
    for block in (b"\x80", b"\xbe", b"\xff\x10", b"\x88\x20"):
        assert outcome(FastDecoder(), block) is outcome(hpack.Decoder(), block)
    small = FastDecoder()
    small.max_header_list_size = 45  # one ":status 200" is 42 (RFC 7541 4.1)
    assert outcome(small, b"\x88") == [("HeaderTuple", b":status", b"200")]
    assert outcome(small, b"\x88\x88") is OversizedHeaderListError


def test_never_indexed_literals_keep_their_type() -> None:
    """A "never indexed" field stays a NeverIndexedHeaderTuple (RFC 7541 6.2.3)."""
    block = hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(b"authorization", b"secret")]
    )
    [field] = FastDecoder().decode(block, raw=True)
    assert isinstance(field, hpack.NeverIndexedHeaderTuple)


def test_unicode_decoding_is_passed_to_hpack() -> None:
    """``raw=False`` (which h2 never asks for) returns str fields as hpack does."""
    assert [tuple(h) for h in FastDecoder().decode(b"\x88")] == [(":status", "200")]


_names = st.sampled_from(
    [b":status", b"apns-id", b"content-type", b"x-a", b"server", b"date"]
) | st.binary(min_size=1, max_size=12).map(lambda b: b.hex().encode())
_values = st.binary(max_size=70).map(lambda b: b.hex().encode())  # up to 140 bytes
_fields = st.tuples(_names, _values) | st.builds(
    hpack.NeverIndexedHeaderTuple, _names, _values
)
_blocks = st.lists(
    st.tuples(
        st.lists(_fields, max_size=8),
        st.booleans(),  # Huffman
        st.sampled_from([None, 0, 64, 256, 4096]),  # table size change first
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(_blocks)
def test_encoded_blocks_decode_like_hpack(blocks: list) -> None:  # type: ignore[type-arg]
    """Across many blocks, evictions and size updates, both decoders agree."""
    encoder = hpack.Encoder()
    ours, theirs = FastDecoder(), hpack.Decoder()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        block = encoder.encode(fields, huffman=huffman)
        assert outcome(ours, block) == outcome(theirs, block)
        assert list(ours.header_table.dynamic_entries) == list(
            theirs.header_table.dynamic_entries
        )


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=24), min_size=1, max_size=4))
def test_random_bytes_fail_like_hpack(blocks: list[bytes]) -> None:
    """Garbage gives hpack's result or hpack's error class, never another one."""
    ours, theirs = FastDecoder(), hpack.Decoder()
    for block in blocks:
        mine = outcome(ours, block)
        assert mine == outcome(theirs, block)
        if isinstance(mine, type):
            return  # a connection error: h2 stops decoding here


def test_the_client_connection_decodes_responses_with_it() -> None:
    """Responses through ClientConnection arrive with their fields intact."""
    client: ClientConnection[str] = ClientConnection()
    assert isinstance(client._h2.decoder, FastDecoder)
    assert (
        client._h2.decoder.max_header_list_size == hpack.Decoder().max_header_list_size
    )
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    client.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for n in range(3):
        client.submit(
            f"r{n}",
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"x"),
                (b":path", b"/"),
            ],
        )
        events = server.receive_data(client.data_to_send())
        [req] = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        server.send_headers(
            req.stream_id,
            [(b":status", b"200"), (b"apns-id", f"id-{n}".encode())],
            end_stream=True,
        )
        got = client.receive_data(server.data_to_send())
        [head] = [e for e in got if isinstance(e, ResponseHeaders)]
        assert head.status == 200
        assert dict(head.headers)[b"apns-id"] == f"id-{n}".encode()


@pytest.mark.parametrize("index", [1, 61, 62, 126])
def test_one_byte_indexes_at_the_table_edges(index: int) -> None:
    """Static entries 1 and 61, and dynamic entries right after them."""
    decoder, reference = FastDecoder(), hpack.Decoder()
    fill = hpack.Encoder()
    fill.header_table_size = 65536
    block = fill.encode([(f"n{k}".encode(), b"v") for k in range(70)])
    decoder.max_allowed_table_size = reference.max_allowed_table_size = 65536
    assert outcome(decoder, block) == outcome(reference, block)
    probe = bytes((0x80 | index,))
    assert outcome(decoder, probe) == outcome(reference, probe)


def _literal(first: int, value: bytes, huffman: bool) -> bytes:
    """A literal field with a one-byte name representation ``first``."""
    if huffman:
        value = HUFFMAN.encode(value)
    assert len(value) < 127
    return bytes((first, (0x80 if huffman else 0) | len(value))) + value


@pytest.mark.parametrize("huffman", [False, True])
@pytest.mark.parametrize(
    "first",
    [
        0x40 | 1,  # incremental indexing, static name 1
        0x40 | 58,  # user-agent
        0x40 | 62,  # the first dynamic entry (filled below)
        0x00 | 1,  # without indexing
        0x00 | 14,  # the last 4-bit index in one byte
        0x10 | 8,  # never indexed
    ],
)
def test_short_literals_decode_like_hpack(first: int, huffman: bool) -> None:
    """Literals with a one-byte name index and length: fields and tables agree."""
    ours, theirs = FastDecoder(), hpack.Decoder()
    fill = hpack.Encoder().encode([(b"apns-id", b"first")])
    for value in (b"", b"0f6b6ac0-5b68-4b5c-9e3a-6c1d3a1e1e1e", b"v" * 100):
        for block in (fill, _literal(first, value, huffman)):
            assert outcome(ours, block) == outcome(theirs, block)
            assert list(ours.header_table.dynamic_entries) == list(
                theirs.header_table.dynamic_entries
            )


@pytest.mark.parametrize(
    "block",
    [
        b"\x41\x7e" + b"x" * 126,  # 126 bytes: the longest one-byte length
        b"\x41\x7f\x00" + b"x" * 127,  # 127: a two-byte length, hpack's path
        b"\x7f\x00\x01x",  # name index 63: two bytes, hpack's path
        b"\x0f\x00\x01x",  # 4-bit index 15: two bytes, hpack's path
        b"\x41\x05abc",  # value cut short
        b"\x41",  # no length byte
        b"\x41\x83\xff\xff\xff",  # Huffman value with EOS in it
        b"\x7e\x01x",  # dynamic name index 62 with an empty table
        b"\x0e\x01x\x88",  # then an indexed field after it
    ],
)
def test_short_literal_edges_and_errors_are_hpacks(block: bytes) -> None:
    """Length and index edges, truncation and bad Huffman: hpack's result."""
    ours, theirs = FastDecoder(), hpack.Decoder()
    assert outcome(ours, block) == outcome(theirs, block)
    assert list(ours.header_table.dynamic_entries) == list(
        theirs.header_table.dynamic_entries
    )
