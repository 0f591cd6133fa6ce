"""Malformed frames on the sealed channel: every one is a ``ProtocolError`` and a failed cell.

The worker runs student code, so every frame it sends is hostile. These tests feed the decoder
frames that are truncated, oversized, of the wrong types, with unknown tags, deeply nested or with
unhashable blob indices, and check that nothing but :class:`ProtocolError` ever comes out; then a
real worker whose replies are forged checks that such a frame fails the test cell even when the
test code catches every ``Exception``.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import numpy as np
import pytest

from grading.sealed import VerdictStatus, protocol, run_sealed
from support.courses import notebook_of

TAGS = ["f", "c", "l", "tu", "set", "fs", "d", "nd", "ns", "dt", "st", "pt", "h", "zz", None, 1, [], {}]
SEED_FRAMES = 3000


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value shaped like the wire's value encoding, often subtly wrong."""
    leaves: list[Any] = [None, True, 0, -1, 2**70, 1.5, "nan", "float64", "<f8", "|O", "", "x" * 300]
    if depth > 4 or rng.random() < 0.3:
        return rng.choice(leaves)
    kind = rng.random()
    if kind < 0.2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    tagged: dict[str, Any] = {"t": rng.choice(TAGS)}
    for key in ("v", "b", "id", "type"):
        if rng.random() < 0.6:
            tagged[key] = random_value(rng, depth + 1)
    if rng.random() < 0.3:
        tagged["v"] = [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.2:
        tagged["v"] = [[random_value(rng, depth + 1), random_value(rng, depth + 1)]]
    return tagged


def decode_frame(body: bytes) -> Any:
    """What the checker does with a frame body: split it, then decode its ``ok`` value."""
    header, blobs = protocol.unpack_body(body)
    return protocol.Decoder(blobs, lambda ident, name: ("handle", ident, name)).decode(header.get("ok"))


def body_of(header: Any, blobs: list[bytes] = ()) -> bytes:
    head = json.dumps(header).encode()
    parts = [struct.pack(">Q", len(head)), head]
    for blob in blobs:
        parts += [struct.pack(">Q", len(blob)), blob]
    return b"".join(parts)


def only_protocol_errors(body: bytes) -> None:
    try:
        decode_frame(body)
    except protocol.ProtocolError:
        pass
    except BaseException as exc:  # noqa: BLE001 - that is what the test is about
        pytest.fail(f"expected ProtocolError or a value, got {type(exc).__name__}: {exc} for {body[:200]!r}")


def test_random_malformed_values_raise_only_protocol_errors():
    """Does any frame of random, subtly wrong tagged values decode or raise ProtocolError, and
    nothing else?"""
    rng = random.Random(12)
    blobs = [b"", b"\x00" * 8, protocol.array_to_bytes(np.arange(3.0))]
    for _ in range(SEED_FRAMES):
        only_protocol_errors(body_of({"ok": random_value(rng)}, blobs))


@pytest.mark.parametrize("index", [[0], {"k": 0}, 0.0, True, "0", None, -1, 99, 2**70])
@pytest.mark.parametrize("tag", ["nd", "ns"])
def test_unhashable_or_wrong_blob_index_is_a_protocol_error(tag: str, index: Any):
    """Is a blob index of any wrong type or value (a list cannot even be a dict key) refused?"""
    body = body_of({"ok": {"t": tag, "v": "float64", "b": index}}, [protocol.array_to_bytes(np.zeros(1))])
    with pytest.raises(protocol.ProtocolError):
        decode_frame(body)


@pytest.mark.parametrize("value", [
    {"t": "c", "v": [{"t": "l", "v": []}, 1]},          # complex with a list part
    {"t": "h", "id": [1], "type": "x"},                  # unhashable handle id
    {"t": "h", "id": 1, "type": ["x"]},
    {"t": "set", "v": [{"t": "l", "v": []}]},            # unhashable set element
    {"t": "d", "v": [[{"t": "tu", "v": [{"t": "l", "v": []}]}, 1]]},  # tuple key holding a list
    {"t": "d", "v": {"a": 1}},
    {"t": "d", "v": [[1]]},
    {"t": ["nd"]},                                       # unhashable tag
    {"t": "f", "v": ["nan"]},
    {"t": "pt", "v": {"x": 1}},
    {"t": "st", "v": ["float64"]},
    {"t": "dt", "v": ["<f8"]},
    {"v": 1},
])
def test_wrong_types_and_unknown_tags_are_protocol_errors(value: Any):
    """Are wrongly typed fields and unknown or unhashable tags refused as protocol errors?"""
    with pytest.raises(protocol.ProtocolError):
        decode_frame(body_of({"ok": value}))


def test_truncated_frames_are_protocol_errors():
    """Is every prefix of a valid frame body either the whole frame or a ProtocolError?"""
    body = body_of({"ok": {"t": "nd", "b": 0}}, [protocol.array_to_bytes(np.arange(4.0))])
    for cut in range(len(body)):
        only_protocol_errors(body[:cut])


def test_oversized_and_nested_frames_are_protocol_errors():
    """Are a header length past the cap, a blob length past the body and nesting past the depth
    limit (in JSON and in the value encoding) refused?"""
    with pytest.raises(protocol.ProtocolError):
        decode_frame(struct.pack(">Q", protocol.MAX_HEADER_BYTES + 1) + b"{}")
    with pytest.raises(protocol.ProtocolError):
        decode_frame(body_of({"ok": 1}) + struct.pack(">Q", 1 << 40) + b"x")
    with pytest.raises(protocol.ProtocolError):
        decode_frame(struct.pack(">Q", 200_000) + b"[" * 100_000 + b"]" * 100_000)
    deep: Any = 1
    for _ in range(protocol.MAX_DECODE_DEPTH + 5):
        deep = {"t": "l", "v": [deep]}
    with pytest.raises(protocol.ProtocolError):
        decode_frame(body_of({"ok": deep}))


def test_header_of_the_wrong_type_is_a_protocol_error():
    """Is a frame whose header is not a JSON object refused?"""
    for header in ([], 1, "ok", None):
        with pytest.raises(protocol.ProtocolError):
            decode_frame(body_of(header))


FORGED_REPLY = """\
import sys

_worker = sys.modules["grading.sealed.worker"]
_dispatch = _worker.Worker.dispatch

def _forged(self, req, blobs):
    if req.get("op") == "call":
        return {"ok": {"t": "nd", "b": [0]}}, []   # an unhashable blob index
    return _dispatch(self, req, blobs)

_worker.Worker.dispatch = _forged

def f():
    return 1
"""


def test_a_forged_reply_fails_the_cell_even_if_the_test_catches_everything():
    """Does a worker reply with an unhashable blob index fail the test cell as a broken worker
    session (a test's ``except Exception`` cannot swallow it), while the next test cell still runs?"""
    nb = notebook_of(
        ("answer", FORGED_REPLY),
        ("test", "try:\n    f()\nexcept Exception:\n    pass"),
        ("test", "assert f.__name__ == 'f'"),
    )
    verdicts = run_sealed(nb, student_names=["f"], cell_timeout=10.0, startup_timeout=20.0)
    assert verdicts["t1"].status is VerdictStatus.FAILED, verdicts["t1"]
    assert verdicts["t1"].ename == "WorkerProtocolError" and "malformed reply" in verdicts["t1"].detail, verdicts["t1"]
    assert verdicts["t2"].status is VerdictStatus.PASSED, verdicts["t2"]


def test_frame_channel_round_trip_eof_and_size_cap():
    """Does the one frame channel carry a frame with blobs, return None at end of file between
    frames, raise ChannelClosed inside a frame and FrameTooLarge before reading a huge one?"""
    import os

    def pipe_channel(**kwargs: Any) -> tuple[protocol.FrameChannel, int]:
        rfd, wfd = os.pipe()
        return protocol.FrameChannel(rfd, wfd, **kwargs), wfd

    channel, wfd = pipe_channel()
    channel.send({"ok": {"t": "nd", "b": 0}}, [protocol.array_to_bytes(np.arange(3.0))])
    header, blobs = channel.recv()
    assert np.array_equal(protocol.load_array(blobs[header["ok"]["b"]]), np.arange(3.0))
    os.write(wfd, b"".join(protocol.pack_frame({"ok": 1}))[:12])
    os.close(wfd)
    with pytest.raises(protocol.ChannelClosed):
        channel.recv()
    assert channel.recv() is None
    os.close(channel.rfd)

    channel, wfd = pipe_channel(max_frame_bytes=100)
    os.write(wfd, struct.pack(">Q", 101))
    with pytest.raises(protocol.FrameTooLarge):
        channel.recv()
    os.close(wfd)
    os.close(channel.rfd)
