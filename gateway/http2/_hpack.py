"""HPACK header blocks without a dynamic table, built from memoised fields.

APNs request headers barely change from one push to the next: method,
scheme, authority, topic, push type, priority, expiration and the provider
JWT repeat, only the path (per device) and ``apns-id`` (per push) vary. The
``hpack`` library's encoder searches its tables, Huffman-codes and logs every
field of every request, which costs more than the rest of sending a stream.

:class:`MemoEncoder` never inserts into the dynamic table (RFC 7541 6.2.2
"literal without indexing", 6.2.3 "never indexed" for credentials, 6.1
static-table references), so a field's bytes depend on the field alone and a
block is the concatenation of cached per-field encodings. It says so to the
peer with a dynamic table size update to 0 at the start of its first block
and of the first block after any SETTINGS_HEADER_TABLE_SIZE change
(RFC 7541 4.2 and 6.3), which is valid for any table size the peer allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable, table_entry_size

from gateway.http2._huffman import decode_huffman

__all__ = ["FastDecoder", "MemoEncoder", "encode_field"]

Header = tuple[bytes, bytes]

# RFC 7541 6.3: dynamic table size update (001xxxxx) to 0.
_TABLE_SIZE_ZERO: Final = b"\x20"
# RFC 7541 6.2.2 (0000xxxx) and 6.2.3 (0001xxxx): literal fields, 4-bit index.
_WITHOUT_INDEXING: Final = 0x00
_NEVER_INDEXED: Final = 0x10
# Credentials intermediaries must not index either (RFC 7541 7.1.3).
_SENSITIVE: Final = frozenset({b"authorization", b"proxy-authorization"})

_STATIC_TABLE: Final = HeaderTable.STATIC_TABLE
_STATIC_FIELDS: Final = {
    field: index for index, field in reversed(list(enumerate(_STATIC_TABLE, start=1)))
}
_STATIC_NAMES: Final = {
    name: index
    for index, (name, _) in reversed(list(enumerate(_STATIC_TABLE, start=1)))
}
_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_STATIC_LENGTH: Final = len(_STATIC_TABLE)


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """RFC 7541 5.1: ``value`` in a ``prefix_bits`` prefix after ``flags``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes, huffman: bool) -> bytes:
    """RFC 7541 5.2: a string literal, Huffman-coded when asked and shorter."""
    if huffman:
        coded = _HUFFMAN.encode(data)
        if len(coded) < len(data):
            return _integer(len(coded), 7, 0x80) + coded
    return _integer(len(data), 7, 0x00) + data


def encode_field(name: bytes, value: bytes, *, huffman: bool) -> bytes:
    """One field's representation, independent of any dynamic table."""
    index = _STATIC_FIELDS.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)  # RFC 7541 6.1: indexed
    flags = _NEVER_INDEXED if name in _SENSITIVE else _WITHOUT_INDEXING
    name_index = _STATIC_NAMES.get(name)
    if name_index is not None:
        head = _integer(name_index, 4, flags)
    else:
        head = bytes((flags,)) + _string(name, huffman)
    return head + _string(value, huffman)


class MemoEncoder(Encoder):
    """Drop-in for ``h2.connection.H2Connection.encoder``; see the module doc.

    A field seen for the first time is sent as a plain literal (Huffman coding
    in pure Python costs more than it saves for a one-off ``apns-id``); from
    its second use on, its Huffman-coded bytes come from the cache. Both
    caches are bounded and simply emptied when full.

    Names must already be lower-case (HTTP/2 requires it; the connection
    lower-cases them): this encoder does no normalisation or validation.
    """

    def __init__(self, max_fields: int = 1024) -> None:
        super().__init__()
        self._max_fields = max_fields
        self._cache: dict[Header, bytes] = {}
        self._seen_once: dict[Header, None] = {}
        self._prefix = _TABLE_SIZE_ZERO

    @property
    def header_table_size(self) -> int:
        """The dynamic table this encoder uses: none, whatever the peer allows."""
        return 0

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's SETTINGS_HEADER_TABLE_SIZE changed: repeat that we use no
        # dynamic table at the start of the next block.
        self._prefix = _TABLE_SIZE_ZERO

    def encode(
        self, headers: Iterable[Any] | dict[Any, Any], huffman: bool = True
    ) -> bytes:
        """One header block for ``headers``, (name, value) pairs of bytes."""
        if isinstance(headers, dict):
            headers = headers.items()
        cache = self._cache
        parts = [self._prefix]
        self._prefix = b""
        for field in headers:
            block = cache.get(field)
            if block is None:
                block = self._first_use(field[0], field[1], huffman)
            parts.append(block)
        return b"".join(parts)

    def _first_use(self, name: bytes, value: bytes, huffman: bool) -> bytes:
        field = (name, value)
        if field not in self._seen_once:
            if len(self._seen_once) >= self._max_fields:
                self._seen_once.clear()
            self._seen_once[field] = None
            return encode_field(name, value, huffman=False)
        del self._seen_once[field]
        if len(self._cache) >= self._max_fields:
            self._cache.clear()
        block = self._cache[field] = encode_field(name, value, huffman=huffman)
        return block


class FastDecoder(Decoder):
    """Drop-in for ``h2.connection.H2Connection.decoder``: the same results,
    with indexed fields read inline.

    Most fields of a response are table references (RFC 7541 6.1): ``:status
    200`` is static entry 8, and a server's repeated fields sit in its dynamic
    table. hpack reads each one through a memoryview slice, three calls and a
    debug log record, which cost more than the rest of a response's HEADERS
    frame. Here a one-byte index (entries 1 to 126) is looked up directly.
    A literal with a one-byte name index and a value under 127 bytes (how a
    server sends each new ``apns-id``) is read here too, with the byte-wise
    Huffman decoder of ``gateway.http2._huffman``, and added to the table
    through hpack's own ``HeaderTable.add``. Every other representation
    (literal names, long values, table size updates) goes through hpack's own
    methods, so the table, its limits and the errors stay hpack's.
    """

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        """The header block's fields, as ``hpack.Decoder.decode`` returns them."""
        if not raw:
            return list(super().decode(data, raw))  # h2 always asks for raw
        table = self.header_table
        dynamic = table.dynamic_entries
        limit = self.max_header_list_size
        headers: list[Any] = []
        inflated = 0
        i = 0
        end = len(data)
        view: memoryview | None = None
        while i < end:
            byte = data[i]
            if 0x80 < byte < 0xFF:
                index = byte - 0x81
                if index < _STATIC_LENGTH:
                    name, value = _STATIC_TABLE[index]
                elif index - _STATIC_LENGTH < len(dynamic):
                    name, value = dynamic[index - _STATIC_LENGTH]
                else:  # out of range: hpack raises its InvalidTableIndex
                    name, value = table.get_by_index(index + 1)
                header: Any = HeaderTuple(name, value)
                i += 1
            else:
                if view is None:
                    view = memoryview(data)
                header, consumed = self._decode_other(view[i:], bool(headers))
                i += consumed
                if header is None:
                    continue
            headers.append(header)
            inflated += table_entry_size(header[0], header[1])
            if inflated > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
        self._assert_valid_table_size()
        return headers

    def _decode_other(self, data: memoryview, after_fields: bool) -> tuple[Any, int]:
        """Any representation but a one-byte index, the way hpack decodes it."""
        first = data[0]
        if first & 0x80:
            return self._decode_indexed(data)
        if first & 0x40:
            # RFC 7541 6.2.1: 01xxxxxx, a 6-bit name index.
            if 0x40 < first < 0x7F and len(data) > 1 and data[1] & 0x7F != 0x7F:
                return self._short_literal(data, first & 0x3F, HeaderTuple, True)
            return self._decode_literal_index(data)
        if first & 0x20:
            if after_fields:
                raise HPACKDecodingError(
                    "Table size update not at the start of the block"
                )
            return None, self._update_encoding_context(data)
        # RFC 7541 6.2.2 and 6.2.3: 0000xxxx and 0001xxxx, a 4-bit name index.
        index = first & 0x0F
        if 0 < index < 0x0F and len(data) > 1 and data[1] & 0x7F != 0x7F:
            kind = NeverIndexedHeaderTuple if first & 0x10 else HeaderTuple
            return self._short_literal(data, index, kind, False)
        return self._decode_literal_no_index(data)

    def _short_literal(
        self,
        data: memoryview,
        index: int,
        kind: type[HeaderTuple],
        should_index: bool,
    ) -> tuple[HeaderTuple, int]:
        """A literal whose name index and value length take one byte each."""
        name = self.header_table.get_by_index(index)[0]
        end = 2 + (data[1] & 0x7F)
        if len(data) < end:
            raise HPACKDecodingError("Truncated header block")
        value = data[2:end].tobytes()
        if data[1] & 0x80:
            value = decode_huffman(value)
        if should_index:
            self.header_table.add(name, value)
        return kind(name, value), end
