"""The byte-wise Huffman decoder: hpack's results and hpack's errors.

Lockstep with ``hpack.huffman_table.decode_huffman`` on strings hpack's own
encoder produced (every octet value, UUIDs as APNs sends them) and on random
bytes, where both must fail the same way (invalid code, EOS, bad padding).
"""

from __future__ import annotations

import uuid

import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http2._huffman import decode_huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def result(decode: object, data: bytes) -> object:
    """The decoded bytes, or the error's class and message."""
    try:
        return decode(data)  # type: ignore[operator]
    except HPACKDecodingError as e:
        return (type(e), str(e))


def test_rfc7541_c4_huffman_samples() -> None:
    """RFC 7541 C.4.1 to C.4.3: the Huffman-coded request values."""
    samples = {
        "f1e3c2e5f23a6ba0ab90f4ff": b"www.example.com",
        "a8eb10649cbf": b"no-cache",
        "25a849e95ba97d7f": b"custom-key",
        "25a849e95bb8e8b4bf": b"custom-value",
    }
    for hex_data, text in samples.items():
        assert decode_huffman(bytes.fromhex(hex_data)) == text


def test_every_octet_and_an_apns_id_round_trip() -> None:
    """All 256 symbols (codes of 5 to 30 bits) and a UUID decode to themselves."""
    every = bytes(range(256))
    assert decode_huffman(ENCODER.encode(every)) == every
    apns_id = str(uuid.uuid4()).encode()
    assert decode_huffman(ENCODER.encode(apns_id)) == apns_id
    assert decode_huffman(b"") == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff\xff", "Invalid Huffman string"),  # EOS (30 ones) inside
        (b"\x00", "Incomplete Huffman string"),  # '0' then 3 zero bits of padding
        (ENCODER.encode(b"a") + b"\x00", "Incomplete Huffman string"),
    ],
)
def test_bad_strings_fail_with_hpacks_errors(data: bytes, message: str) -> None:
    """EOS, padding of zeros and over-long padding fail as hpack fails them."""
    assert result(decode_huffman, data) == (HPACKDecodingError, message)
    assert result(hpack_decode, data) == (HPACKDecodingError, message)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_like_hpack(data: bytes) -> None:
    """Any input: the same bytes, or the same error and message."""
    assert result(decode_huffman, data) == result(hpack_decode, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_encoded_strings_round_trip(text: bytes) -> None:
    """What hpack's encoder writes decodes back, as hpack decodes it."""
    encoded = ENCODER.encode(text)
    assert decode_huffman(encoded) == text == hpack_decode(encoded)
