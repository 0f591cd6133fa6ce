"""Wire format between the sealed checker and the worker that runs student code.

Frame layout (all lengths 8-byte big-endian unsigned)::

    total_length | header_length | header (JSON, utf-8) | blob_length | blob | blob_length | blob ...

``total_length`` counts everything after itself. The header is a JSON object; values inside it
are encoded with :class:`Encoder` and refer to blobs by index.

Value encoding (JSON objects on the wire are always tagged with ``"t"``):

* ``null``/``true``/``false``/int/finite float/str: as JSON (only the *exact* builtin types)
* ``{"t": "f", "v": "nan"|"inf"|"-inf"}``: non-finite float
* ``{"t": "c", "v": [re, im]}``: complex
* ``{"t": "l"|"tu"|"set"|"fs", "v": [...]}``: list, tuple, set, frozenset
* ``{"t": "d", "v": [[key, value], ...]}``: dict whose keys are str/int/float/bool/None
* ``{"t": "nd", "b": i}``: exact ``np.ndarray`` with a bool/int/uint/float/complex dtype, ``np.save``
  bytes; the same array object appearing twice in a value is sent once and decoded as one object
* ``{"t": "ns", "v": name, "b": i}``: numpy scalar of an exact numpy scalar type, raw bytes
* ``{"t": "dt", "v": "<f8"}``: numpy dtype object; ``{"t": "st", "v": "float32"}``: numpy scalar type
* ``{"t": "pt", "v": "float"}``: one of the builtin classes int/float/bool/complex/str
* ``{"t": "h", "id": n, "type": name}``: handle to an object that stays in the worker

Requests (checker -> worker) are headers ``{"op": name, ...}``; replies are ``{"ok": value}`` or
``{"error": {"mro": [class names], "msg": text}}``. Operations:

* ``exec_cells(sources)``: run cells through IPython, reply with one success flag per cell
* ``getglobal(name)``: handle to a top-level student name (``NameError`` if undefined)
* ``loadglobal(name)``: a top-level student name as a test cell reads it: ``{"module": name}`` or
  ``{"value": value}`` (``NameError`` if undefined); ``setglobal(name, value)``, ``delglobal(name)``;
  ``globalnames()``: the student's own top-level names
* ``getattr(h, name)``, ``setattr(h, name, value)``, ``call(h, args, kwargs)``
* ``release(ids | all)``: forget handles
* ``bench(h, args_list)``: call ``h`` on every argument tuple and reply with the fingerprints of
  the results (:func:`grading.checksums.call_and_checksum`); the checker times the round trip, so
  the arguments and the checksums both cross inside the timed window

The checker treats every frame from the worker as hostile: :class:`Decoder` validates the
structure and never unpickles anything.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import select
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_ENCODE_DEPTH = 64          # deeper containers become handles
MAX_DECODE_DEPTH = 100
MAX_ENCODE_NODES = 5_000_000   # more -> the value is refused as too large to transfer
MAX_INT_BITS = 12_000          # beyond this json cannot print the int (int max str digits)
ERROR_MESSAGE_CHARS = 500
TYPE_NAME_CHARS = 200
NPY_HEADER_BYTES = 16_384      # .npy magic + header must fit (numpy's own limit is 10,000)

_LEN = struct.Struct(">Q")

ARRAY_KINDS = frozenset("biufc")

#: numpy scalar types that cross the channel by value, keyed by ``__name__``.
NUMPY_SCALAR_TYPES: dict[str, type] = {
    t.__name__: t
    for t in set(np.sctypeDict.values())
    if isinstance(t, type) and issubclass(t, np.generic) and np.dtype(t).kind in ARRAY_KINDS
}
_NUMPY_SCALAR_SET = frozenset(NUMPY_SCALAR_TYPES.values())
_DTYPE_CLASSES = frozenset(type(np.dtype(t)) for t in _NUMPY_SCALAR_SET)
PYTHON_TYPES: dict[str, type] = {t.__name__: t for t in (int, float, bool, complex, str)}
_DTYPE_STR = re.compile(r"^[<>|=][biufc][0-9]{1,2}$")
_KEY_TYPES = (str, int, float, bool, type(None))


class ProtocolError(Exception):
    """A frame or value on the channel is malformed, too large, or not allowed."""


# --------------------------------------------------------------------------------------- frames
def pack_frame(header: dict[str, Any], blobs: Sequence[bytes] = ()) -> list[bytes]:
    """Serialise one frame into a list of byte chunks (write them in order)."""
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    parts: list[bytes] = [_LEN.pack(len(head)), head]
    for blob in blobs:
        parts.append(_LEN.pack(len(blob)))
        parts.append(blob)
    total = sum(len(p) for p in parts)
    return [_LEN.pack(total), *parts]


IOV_BATCH = 512  # buffers per writev call (Linux allows 1024)


def advance(views: list[memoryview], first: int, written: int) -> int:
    """Account for ``written`` bytes sent from ``views[first:]``: trim a partly sent view in place
    and return the index of the first view not yet sent completely."""
    while written:
        size = len(views[first])
        if written >= size:
            written -= size
            first += 1
        else:
            views[first] = views[first][written:]
            written = 0
    return first


def frame_length(prefix: bytes) -> int:
    """Decode the 8-byte total-length prefix of a frame."""
    return _LEN.unpack(prefix)[0]


class FrameTooLarge(ProtocolError):
    """A frame announces more bytes than the receiving side accepts."""


class ChannelClosed(Exception):
    """The other side closed the channel in the middle of a frame."""


class FrameChannel:
    """Frames over a pair of pipe file descriptors: the one reader and writer of both sides.

    ``wait(fd, event)`` is called before every read and write attempt (``select.POLLIN`` or
    ``select.POLLOUT``): the checker passes one that polls with its deadline and raises when the
    worker died or the time is up, on non-blocking descriptors; the worker passes none and blocks.
    Frames longer than ``max_frame_bytes`` raise :class:`FrameTooLarge` before anything is allocated.
    """

    def __init__(self, rfd: int, wfd: int, *, wait: Callable[[int, int], None] | None = None,
                 max_frame_bytes: int = MAX_FRAME_BYTES):
        self.rfd = rfd
        self.wfd = wfd
        self.wait = wait
        self.max_frame_bytes = max_frame_bytes

    def send(self, header: dict[str, Any], blobs: Sequence[bytes] = ()) -> None:
        """Write one frame, with as few ``writev`` calls (and wake-ups of the reader) as possible."""
        self.send_chunks(pack_frame(header, blobs))

    def send_chunks(self, chunks: Sequence[bytes]) -> None:
        """Write a frame already packed by :func:`pack_frame`."""
        views = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
        first = 0
        while first < len(views):
            if self.wait is not None:
                self.wait(self.wfd, select.POLLOUT)
            try:
                written = os.writev(self.wfd, views[first:first + IOV_BATCH])
            except BlockingIOError:
                continue
            first = advance(views, first, written)

    def _read_into(self, view: memoryview) -> bool:
        """Fill ``view``; False on end of file before its first byte, :class:`ChannelClosed` after."""
        pos = 0
        while pos < len(view):
            if self.wait is not None:
                self.wait(self.rfd, select.POLLIN)
            try:
                got = os.readv(self.rfd, [view[pos:]])
            except BlockingIOError:
                continue
            if got == 0:
                if pos == 0:
                    return False
                raise ChannelClosed("end of file inside a frame")
            pos += got
        return True

    def recv(self) -> tuple[dict[str, Any], list[memoryview]] | None:
        """Read one frame: its header and blobs, or ``None`` on end of file between frames."""
        prefix = bytearray(8)
        if not self._read_into(memoryview(prefix)):
            return None
        size = frame_length(bytes(prefix))
        if size > self.max_frame_bytes:
            raise FrameTooLarge(f"a frame of {size} bytes is larger than the limit of {self.max_frame_bytes}")
        body = bytearray(size)
        if size and not self._read_into(memoryview(body)):
            raise ChannelClosed("end of file inside a frame")
        return unpack_body(body)


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-standard JSON constant {name}")


def unpack_body(body: bytes | bytearray | memoryview) -> tuple[dict[str, Any], list[memoryview]]:
    """Split a frame body (everything after the total length) into header dict and blobs."""
    view = memoryview(body)
    try:
        if len(view) < 8:
            raise ProtocolError("truncated frame")
        head_len = _LEN.unpack(view[:8])[0]
        if head_len > MAX_HEADER_BYTES or 8 + head_len > len(view):
            raise ProtocolError("bad header length")
        header = json.loads(bytes(view[8:8 + head_len]).decode("utf-8"), parse_constant=_reject_constant)
        blobs: list[memoryview] = []
        pos = 8 + head_len
        while pos < len(view):
            if pos + 8 > len(view):
                raise ProtocolError("truncated blob length")
            size = _LEN.unpack(view[pos:pos + 8])[0]
            pos += 8
            if pos + size > len(view):
                raise ProtocolError("truncated blob")
            blobs.append(view[pos:pos + size])
            pos += size
    except ProtocolError:
        raise
    except Exception as exc:  # json errors, RecursionError, UnicodeDecodeError, ...
        raise ProtocolError(f"unreadable frame: {type(exc).__name__}") from None
    if type(header) is not dict:
        raise ProtocolError("frame header is not an object")
    return header, blobs


# ------------------------------------------------------------------------------------- encoding
def _array_allowed(dtype: np.dtype) -> bool:
    return dtype.kind in ARRAY_KINDS and dtype.fields is None and dtype.subdtype is None


def array_to_bytes(arr: np.ndarray) -> bytes:
    """``np.save`` an exact ndarray (no pickling) into bytes."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class Encoder:
    """Encode a value into JSON-able data plus blobs.

    ``on_other(obj)`` is called for anything that does not cross by value: the worker turns it
    into a handle, the checker turns a proxy into its handle reference or raises ``TypeError``.
    Only exact builtin/numpy types are encoded by value, so no student-defined method runs here.
    """

    def __init__(self, on_other: Callable[[Any], dict[str, Any]]):
        self.blobs: list[bytes] = []
        self.on_other = on_other
        self._nodes = 0
        self._active: set[int] = set()
        # id(array) -> (blob index, array): one copy per array object; the reference keeps the id valid
        self._array_blobs: dict[int, tuple[int, np.ndarray]] = {}

    def _blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def encode(self, x: Any, depth: int = 0) -> Any:
        self._nodes += 1
        if self._nodes > MAX_ENCODE_NODES:
            raise OverflowError("value too large to transfer between processes")
        t = type(x)
        if x is None or t is bool or t is str:
            return x
        if t is int:
            return x if x.bit_length() <= MAX_INT_BITS else self.on_other(x)
        if t is float:
            if math.isfinite(x):
                return x
            return {"t": "f", "v": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
        if t is complex:
            return {"t": "c", "v": [self.encode(x.real, depth), self.encode(x.imag, depth)]}
        if t is np.ndarray and _array_allowed(x.dtype):
            if id(x) not in self._array_blobs:
                self._array_blobs[id(x)] = (self._blob(array_to_bytes(x)), x)
            return {"t": "nd", "b": self._array_blobs[id(x)][0]}
        if t in _NUMPY_SCALAR_SET:
            return {"t": "ns", "v": t.__name__, "b": self._blob(x.tobytes())}
        if t in _DTYPE_CLASSES:
            return {"t": "dt", "v": x.str}
        if t is type or issubclass(t, type):  # a class object
            if x in _NUMPY_SCALAR_SET:
                return {"t": "st", "v": x.__name__}
            if any(x is p for p in PYTHON_TYPES.values()):
                return {"t": "pt", "v": x.__name__}
            return self.on_other(x)
        if t in (list, tuple, set, frozenset, dict):
            return self._container(x, t, depth)
        return self.on_other(x)

    def _container(self, x: Any, t: type, depth: int) -> Any:
        if depth >= MAX_ENCODE_DEPTH or id(x) in self._active:
            return self.on_other(x)
        if t is dict and not all(type(k) in _KEY_TYPES for k in dict.keys(x)):
            return self.on_other(x)
        self._active.add(id(x))
        try:
            if t is dict:
                items = [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in dict.items(x)]
                return {"t": "d", "v": items}
            tag = {list: "l", tuple: "tu", set: "set", frozenset: "fs"}[t]
            return {"t": tag, "v": [self.encode(item, depth + 1) for item in t.__iter__(x)]}
        finally:
            self._active.discard(id(x))


# ------------------------------------------------------------------------------------- decoding
#: The header ``np.save`` writes for a plain array (version 1.0), matched exactly; anything else
#: goes through numpy's own (slower, ``ast.literal_eval`` based) header reader.
_NPY_MAGIC_V1 = b"\x93NUMPY\x01\x00"
_NPY_SIMPLE_HEADER = re.compile(
    rb"\{'descr': '([<>|][biufc][0-9]{1,2})', 'fortran_order': (False|True), "
    rb"'shape': \(((?:[0-9]{1,20}, )*(?:[0-9]{1,20},?)?)\), \} *\n")


def _npy_header(data: memoryview) -> tuple[Any, Any, Any, int]:
    """``(shape, fortran_order, dtype, data offset)`` of ``.npy`` bytes (not yet validated)."""
    if bytes(data[:8]) == _NPY_MAGIC_V1 and len(data) >= 10:
        head_len = int.from_bytes(data[8:10], "little")
        match = _NPY_SIMPLE_HEADER.fullmatch(bytes(data[10:10 + head_len]))
        if match is not None and 10 + head_len <= len(data):
            descr, fortran, dims = match.groups()
            shape = tuple(int(n) for n in dims.replace(b" ", b"").split(b",") if n)
            return shape, fortran == b"True", np.dtype(descr.decode("ascii")), 10 + head_len
    f = io.BytesIO(bytes(data[:NPY_HEADER_BYTES]))  # header only; the data is never copied twice
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ProtocolError(f"unsupported npy version {version}")
    return shape, fortran, dtype, f.tell()


def load_array(blob: bytes | memoryview) -> np.ndarray:
    """Rebuild a plain ``np.ndarray`` from ``np.save`` bytes, validating before allocating.

    The header is parsed with numpy's own ``.npy`` reader (no pickle is ever allowed), or, when it
    is exactly the header ``np.save`` writes for a plain array, by a strict pattern; either way the
    dtype must be bool/int/uint/float/complex and the data length must match the shape; the
    result is a fresh, writable, exact ``np.ndarray``.
    """
    try:
        data = memoryview(blob).cast("B")
        shape, fortran, dtype, offset = _npy_header(data)
        dtype = np.dtype(dtype)
        if not _array_allowed(dtype) or dtype.hasobject:
            raise ProtocolError(f"array dtype {dtype} not allowed")
        if type(shape) is not tuple or len(shape) > 32 or any(type(n) is not int or n < 0 for n in shape):
            raise ProtocolError("bad array shape")
        if type(fortran) is not bool:
            raise ProtocolError("bad array order")
        count = math.prod(shape)
        if count * dtype.itemsize != len(data) - offset:
            raise ProtocolError("array data length does not match its shape")
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arr = np.array(flat.reshape(shape, order="F" if fortran else "C"), copy=True)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"unreadable array: {type(exc).__name__}: {exc}") from None
    if type(arr) is not np.ndarray:
        raise ProtocolError("array did not decode to np.ndarray")
    return arr


def _load_numpy_scalar(name: Any, blob: memoryview) -> Any:
    typ = NUMPY_SCALAR_TYPES.get(name) if type(name) is str else None
    if typ is None:
        raise ProtocolError(f"numpy scalar type {name!r} not allowed")
    dtype = np.dtype(typ)
    if len(blob) != dtype.itemsize:
        raise ProtocolError("numpy scalar has the wrong size")
    value = np.frombuffer(bytes(blob), dtype=dtype, count=1)[0]
    return value if type(value) is typ else typ(value)


def _load_dtype(text: Any) -> np.dtype:
    if type(text) is not str or not _DTYPE_STR.match(text):
        raise ProtocolError(f"dtype {text!r} not allowed")
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise ProtocolError(f"dtype {text!r} not allowed") from None
    if not _array_allowed(dtype):
        raise ProtocolError(f"dtype {text!r} not allowed")
    return dtype


class _HandleLookupFailed(Exception):
    """Carries an exception raised by a decoder's ``on_handle`` through :meth:`Decoder.decode`."""

    def __init__(self, original: Exception):
        super().__init__(original)
        self.original = original


class Decoder:
    """Decode JSON data + blobs produced by :class:`Encoder`.

    ``on_handle(id, type_name)`` builds whatever stands for a remote object on this side.
    Every malformed input raises :class:`ProtocolError`.
    """

    def __init__(self, blobs: Sequence[memoryview], on_handle: Callable[[int, str], Any]):
        self.blobs = blobs
        self.on_handle = on_handle
        self._arrays: dict[int, np.ndarray] = {}  # blob index -> array, so shared arrays stay shared

    def _blob(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.blobs):
            raise ProtocolError("bad blob index")
        return self.blobs[index]

    def decode(self, j: Any) -> Any:
        """The value ``j`` encodes; :class:`ProtocolError` for anything malformed, never another
        exception (except what ``on_handle`` itself raises, which passes through unchanged)."""
        try:
            return self._value(j, 0)
        except ProtocolError:
            raise
        except _HandleLookupFailed as failed:
            raise failed.original from None
        except Exception as exc:  # RecursionError, MemoryError, a check this decoder forgot
            raise ProtocolError(f"undecodable value: {type(exc).__name__}") from None

    def _value(self, j: Any, depth: int) -> Any:
        t = type(j)
        if j is None or t in (bool, int, float, str):
            return j
        if depth > MAX_DECODE_DEPTH:
            raise ProtocolError("value nested too deeply")
        if t is not dict:
            raise ProtocolError(f"untagged {t.__name__} on the wire")
        tag = j.get("t")
        v = j.get("v")
        if type(tag) is not str:
            raise ProtocolError("untagged object on the wire")
        if tag == "f":
            if v not in ("nan", "inf", "-inf"):
                raise ProtocolError("bad float")
            return float(v)
        if tag == "c":
            if type(v) is not list or len(v) != 2:
                raise ProtocolError("bad complex")
            re_, im_ = (self._value(p, depth + 1) for p in v)
            if type(re_) not in (int, float) or type(im_) not in (int, float):
                raise ProtocolError("bad complex")
            return complex(re_, im_)
        if tag in ("l", "tu", "set", "fs"):
            if type(v) is not list:
                raise ProtocolError("bad sequence")
            items = [self._value(item, depth + 1) for item in v]
            if tag == "l":
                return items
            if tag == "tu":
                return tuple(items)
            try:
                return set(items) if tag == "set" else frozenset(items)
            except TypeError:
                raise ProtocolError("unhashable set element") from None
        if tag == "d":
            return self._dict(v, depth)
        if tag == "nd":
            index = j.get("b")
            blob = self._blob(index)  # an int in range (never a list or dict) from here on
            if index not in self._arrays:
                self._arrays[index] = load_array(blob)
            return self._arrays[index]
        if tag == "ns":
            return _load_numpy_scalar(v, self._blob(j.get("b")))
        if tag == "dt":
            return _load_dtype(v)
        if tag == "st":
            if type(v) is not str or v not in NUMPY_SCALAR_TYPES:
                raise ProtocolError("bad numpy type")
            return NUMPY_SCALAR_TYPES[v]
        if tag == "pt":
            if type(v) is not str or v not in PYTHON_TYPES:
                raise ProtocolError("bad python type")
            return PYTHON_TYPES[v]
        if tag == "h":
            ident, name = j.get("id"), j.get("type", "object")
            if type(ident) is not int or type(name) is not str:
                raise ProtocolError("bad handle")
            try:
                return self.on_handle(ident, name[:TYPE_NAME_CHARS])
            except Exception as exc:
                raise _HandleLookupFailed(exc) from None
        raise ProtocolError(f"unknown tag {tag!r}")

    def _dict(self, v: Any, depth: int) -> dict[Any, Any]:
        if type(v) is not list:
            raise ProtocolError("bad dict")
        out: dict[Any, Any] = {}
        for pair in v:
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError("bad dict item")
            key = self._value(pair[0], depth + 1)
            if type(key) not in _KEY_TYPES:
                raise ProtocolError("bad dict key")
            out[key] = self._value(pair[1], depth + 1)
        return out


# ----------------------------------------------------------------------------------- exceptions
class StudentError(Exception):
    """Student code raised an exception that is not one of the mapped builtin classes."""


class SealedFailure(BaseException):
    """The worker process failed; derives from BaseException so ``except Exception`` cannot hide it."""


class WorkerCrashed(SealedFailure):
    """The worker process died (exit, signal) while serving a request."""


class WorkerTimeout(SealedFailure):
    """A request to the worker did not complete within the time allowed for the test cell."""


class WorkerProtocolError(SealedFailure):
    """The worker sent a frame that is too large or malformed."""


#: Exception classes re-raised in the checker with the student's message.
MAPPED_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (ValueError, TypeError, IndexError, KeyError, LookupError, RuntimeError,
                NotImplementedError, AttributeError, ZeroDivisionError, ArithmeticError,
                OverflowError, MemoryError, NameError)
}


def safe_text(obj: Any, limit: int = ERROR_MESSAGE_CHARS) -> str:
    """``str(obj)`` truncated to ``limit`` characters; never raises."""
    try:
        text = str(obj)
        text = str.__str__(text) if isinstance(text, str) else "<unprintable>"
    except BaseException:
        text = "<unprintable>"
    return text[:limit]


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """Worker side: the wire form of an exception raised by student code."""
    try:
        mro = [safe_text(cls.__name__, TYPE_NAME_CHARS) for cls in type(exc).__mro__][:50]
    except BaseException:
        mro = ["BaseException"]
    return {"mro": mro, "msg": safe_text(exc)}


def exception_from_wire(info: Any) -> BaseException:
    """Checker side: rebuild an allowed builtin exception (or :class:`StudentError`)."""
    if type(info) is not dict:
        raise ProtocolError("bad error payload")
    mro, msg = info.get("mro"), info.get("msg")
    if type(mro) is not list or not mro or not all(type(n) is str for n in mro) or type(msg) is not str:
        raise ProtocolError("bad error payload")
    msg = msg[:ERROR_MESSAGE_CHARS]
    for name in mro:
        if name in MAPPED_EXCEPTIONS:
            return MAPPED_EXCEPTIONS[name](msg)
    original = mro[0][:TYPE_NAME_CHARS]
    return StudentError(f"student code raised {original}: {msg}" if msg else f"student code raised {original}")
