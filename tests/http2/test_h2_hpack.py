"""MemoEncoder: its header blocks decode with the hpack library to what was sent.

Blocks are checked against ``hpack.Decoder`` directly and, through
``ClientConnection``, against h2's server-side state machine, including a
server that changes SETTINGS_HEADER_TABLE_SIZE (RFC 7541 4.2 and 6.3).
"""

from __future__ import annotations

import random

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from gateway.http2._connection import ClientConnection
from gateway.http2._hpack import MemoEncoder, encode_field

APNS = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.push.apple.com"),
    (b":path", b"/3/device/" + b"5e1f" * 16),
    (b"apns-push-type", b"voip"),
    (b"apns-topic", b"com.example.phone.voip"),
    (b"apns-priority", b"10"),
    (b"apns-expiration", b"0"),
    (b"apns-id", b"2f1e3e1c-7b7c-4d8e-9b7a-0f1e2d3c4b5a"),
    (b"authorization", b"bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ." * 3),
    (b"accept-encoding", b"gzip"),
    (b"content-length", b"344"),
]


def decoded(decoder: hpack.Decoder, block: bytes) -> list[tuple[bytes, bytes]]:
    return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]


def test_blocks_decode_to_the_headers_first_second_and_cached_use() -> None:
    """A field's first (plain), second (Huffman) and later (cached) encodings all
    decode to it, and the decoder's dynamic table stays empty."""
    encoder, decoder = MemoEncoder(), hpack.Decoder()
    blocks = [encoder.encode(APNS) for _ in range(3)]
    for block in blocks:
        assert decoded(decoder, block) == APNS
    assert len(decoder.header_table.dynamic_entries) == 0
    assert len(blocks[1]) < len(blocks[0])  # Huffman from the second use
    assert blocks[2] == blocks[1]  # cached from the second use on


def test_table_size_update_first_and_after_each_settings_change() -> None:
    """The first block starts with a table size update to 0, as does the first
    block after the peer's SETTINGS_HEADER_TABLE_SIZE changed; a decoder that
    allows no dynamic table at all accepts every block."""
    encoder = MemoEncoder()
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 0
    first = encoder.encode(APNS)
    assert first[0] == 0x20
    assert decoded(decoder, first) == APNS
    assert encoder.encode(APNS)[0] != 0x20
    encoder.header_table_size = 0
    after = encoder.encode(APNS)
    assert after[0] == 0x20
    assert decoded(decoder, after) == APNS
    assert encoder.encode(APNS)[0] != 0x20
    assert encoder.header_table_size == 0


def test_static_table_fields_are_one_byte_and_credentials_never_indexed() -> None:
    """Whole static-table matches are indexed (RFC 7541 6.1); authorization is a
    never-indexed literal (6.2.3) so intermediaries do not index it either."""
    assert encode_field(b":method", b"POST", huffman=True) == b"\x83"
    assert encode_field(b":scheme", b"https", huffman=True) == b"\x87"
    assert encode_field(b":path", b"/", huffman=False) == b"\x84"
    encoder, decoder = MemoEncoder(), hpack.Decoder()
    fields = decoder.decode(encoder.encode([(b"authorization", b"bearer x")]))
    assert [type(f) for f in fields] == [hpack.NeverIndexedHeaderTuple]
    fields = decoder.decode(encoder.encode([(b"apns-id", b"x")]))
    assert [type(f) for f in fields] == [hpack.HeaderTuple]


@pytest.mark.parametrize("size", [0, 1, 126, 127, 128, 255, 16383, 16384, 70000])
def test_lengths_across_integer_prefix_boundaries(size: int) -> None:
    """Long names and values (multi-byte integers, RFC 7541 5.1) round-trip."""
    rng = random.Random(size)
    value = bytes(rng.randrange(256) for _ in range(size))
    name = b"x-" + b"n" * (size % 300)
    encoder, decoder = MemoEncoder(), hpack.Decoder()
    decoder.max_header_list_size = 1 << 20
    for _ in range(3):
        assert decoded(decoder, encoder.encode([(name, value)])) == [(name, value)]


def test_random_headers_round_trip() -> None:
    """Random fields, some repeated, some in the static table, all round-trip."""
    rng = random.Random(7)
    pool = [
        *APNS,
        (b":status", b"200"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"x-empty", b""),
    ]
    encoder, decoder = MemoEncoder(max_fields=8), hpack.Decoder()
    for _ in range(200):
        headers = [rng.choice(pool) for _ in range(rng.randrange(1, 12))]
        headers += [(b"x-r", str(rng.random()).encode())]
        assert decoded(decoder, encoder.encode(headers)) == headers


def test_caches_stay_bounded() -> None:
    """Per-push values (apns-id) do not grow the caches past their bound."""
    encoder = MemoEncoder(max_fields=16)
    for i in range(1000):
        encoder.encode([(b"apns-id", b"%d" % i)])
        encoder.encode([(b"apns-id", b"%d" % i)])
    assert len(encoder._cache) <= 16
    assert len(encoder._seen_once) <= 16


def test_h2_server_decodes_requests_across_a_header_table_size_change() -> None:
    """Through ClientConnection, h2's server reads every request, before and
    after it lowers SETTINGS_HEADER_TABLE_SIZE to 0 (its decoder then insists
    on a size update, which the client's next block carries)."""
    client: ClientConnection[int] = ClientConnection()
    client.initiate()
    server = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())

    def send(key: int) -> list[tuple[bytes, bytes]]:
        client.submit(key, APNS[:-1])
        (event,) = [
            e
            for e in server.receive_data(client.data_to_send())
            if isinstance(e, h2.events.RequestReceived)
        ]
        return [(bytes(n), bytes(v)) for n, v in event.headers or ()]

    assert send(1) == APNS[:-1]
    assert send(2) == APNS[:-1]
    server.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # SETTINGS ACK: decoder limit is 0
    assert server.decoder.max_allowed_table_size == 0
    assert send(3) == APNS[:-1]
    assert send(4) == APNS[:-1]
