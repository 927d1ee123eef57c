"""Canonical binary framing of secure-aggregation messages.

Every protocol message, and every byte string that is signed or used as AEAD associated data, is a
*map* of byte strings under text keys, encoded canonically (keys sorted, each item length-prefixed),
so that the same content always gives the same bytes and no two contents give the same bytes.
Lists of byte strings and small integers have helpers built on the same framing.

>>> unpack_map(pack_map({"b": b"2", "a": b"1"}))
{'a': b'1', 'b': b'2'}
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from hemafed.errors import ProtocolError

_MAGIC = b"HFM1"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _frame(item: bytes) -> bytes:
    return _U64.pack(len(item)) + item


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise ProtocolError(f"{self.what}: truncated or malformed message")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def item(self) -> bytes:
        if self.pos + 8 > len(self.data):
            raise ProtocolError(f"{self.what}: truncated or malformed message")
        (n,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return self.take(n)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.what}: trailing bytes after message")


def pack_map(items: Mapping[str, bytes]) -> bytes:
    """Encode ``{text key: bytes}`` canonically (keys sorted)."""
    out = [_MAGIC, _U32.pack(len(items))]
    for key in sorted(items):
        value = items[key]
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"value of {key!r} must be bytes, got {type(value).__name__}")
        out.append(_frame(key.encode("utf-8")))
        out.append(_frame(bytes(value)))
    return b"".join(out)


def unpack_map(data: bytes, what: str = "message") -> dict[str, bytes]:
    """Decode :func:`pack_map` output; anything malformed raises ``ProtocolError``."""
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    size = len(data)
    if data[:4] != _MAGIC:
        raise ProtocolError(f"{what}: not a hemafed secure-aggregation message")
    # one flat loop (no per-item calls): maps are decoded at every protocol step
    read = _U64.unpack_from
    out: dict[str, bytes] = {}
    previous = ""
    pos = 8
    try:
        (count,) = _U32.unpack_from(data, 4)
        for i in range(count):
            (n,) = read(data, pos)
            end = pos + 8 + n
            if end > size:
                raise ProtocolError(f"{what}: truncated or malformed message")
            key = data[pos + 8:end].decode("utf-8")
            if i and key <= previous:
                raise ProtocolError(f"{what}: keys not in canonical order")
            previous = key
            (n,) = read(data, end)
            pos = end + 8 + n
            if pos > size:
                raise ProtocolError(f"{what}: truncated or malformed message")
            out[key] = data[end + 8:pos]
    except struct.error:
        raise ProtocolError(f"{what}: truncated or malformed message") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: malformed key") from None
    if pos != size:
        raise ProtocolError(f"{what}: trailing bytes after message")
    return out


def pack_list(items: Sequence[bytes]) -> bytes:
    """Encode an ordered list of byte strings."""
    return _U32.pack(len(items)) + b"".join(_frame(bytes(i)) for i in items)


def unpack_list(data: bytes, what: str = "list") -> list[bytes]:
    """Decode :func:`pack_list` output."""
    reader = _Reader(data, what)
    (count,) = _U32.unpack(reader.take(4))
    out = [reader.item() for _ in range(count)]
    reader.done()
    return out


def pack_names(names: Sequence[str]) -> bytes:
    """Encode a list of site ids."""
    return pack_list([n.encode("utf-8") for n in names])


def unpack_names(data: bytes, what: str = "site list") -> list[str]:
    """Decode :func:`pack_names` output."""
    try:
        return [b.decode("utf-8") for b in unpack_list(data, what)]
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: malformed site id") from None


def pack_int(value: int) -> bytes:
    """Encode a non-negative integer below 2**64."""
    return _U64.pack(value)


def unpack_int(data: bytes, what: str = "integer") -> int:
    """Decode :func:`pack_int` output."""
    if len(data) != 8:
        raise ProtocolError(f"{what}: expected 8 bytes, got {len(data)}")
    return int(_U64.unpack(data)[0])


def field(message: Mapping[str, bytes], key: str, what: str = "message") -> bytes:
    """``message[key]``, or a ``ProtocolError`` naming what is missing."""
    try:
        return message[key]
    except KeyError:
        raise ProtocolError(f"{what}: missing field {key!r}") from None
