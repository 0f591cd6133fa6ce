"""Checker-side stand-ins for objects that live in the worker process.

A :class:`RemoteObject` forwards exactly three things to the worker: attribute reads, attribute
writes and calls. Results that are plain data come back as local copies; everything else comes
back as another :class:`RemoteObject`. Nothing else is forwarded: a proxy has no ``__eq__``,
``__len__``, ``__iter__``, ``__array__`` or arithmetic, and ``bool(proxy)`` raises, so a student
object used where a number, array or boolean is expected fails with ``TypeError`` instead of
comparing equal. Arrays read from a student object are read-only copies (an in-place write on one
would otherwise change nothing on the student's side, silently). Dunder attributes are never fetched from the worker (numpy would otherwise read
``__array_interface__`` from it and trust a raw pointer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

#: Dunder names that may be read from the worker (plain strings, never interpreted by Python).
SAFE_DUNDERS = frozenset({"__name__", "__qualname__"})


def read_only(value: Any, depth: int = 0) -> Any:
    """Mark every ndarray in ``value`` (a decoded, checker-owned copy) read-only, in place."""
    if type(value) is np.ndarray:
        value.flags.writeable = False
    elif type(value) in (list, tuple, set, frozenset) and depth < 100:
        for item in value:
            read_only(item, depth + 1)
    elif type(value) is dict and depth < 100:
        for item in value.values():
            read_only(item, depth + 1)
    return value


class Session(Protocol):
    """What a proxy needs from the checker's connection to the worker."""

    epoch: int

    def request(self, op: str, fields: dict[str, Any] | None = None,
                values: dict[str, Any] | None = None) -> Any: ...

    def timed_request(self, op: str, fields: dict[str, Any] | None = None,
                      values: dict[str, Any] | None = None) -> tuple[float, Any]: ...


class RemoteObject:
    """Proxy for an object held in the worker's handle registry."""

    __slots__ = ("_sealed_session", "_sealed_handle", "_sealed_type", "_sealed_epoch")

    def __init__(self, session: Session, handle: int | None, type_name: str, epoch: int):
        object.__setattr__(self, "_sealed_session", session)
        object.__setattr__(self, "_sealed_handle", handle)
        object.__setattr__(self, "_sealed_type", type_name)
        object.__setattr__(self, "_sealed_epoch", epoch)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_sealed_") or (
                name.startswith("__") and name.endswith("__") and name not in SAFE_DUNDERS):
            raise AttributeError(name)
        return read_only(session_of(self).request("getattr", {"h": handle_of(self), "name": name}))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"cannot set {name} on a student object in sealed mode")
        session_of(self).request("setattr", {"h": handle_of(self), "name": name}, {"value": value})

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name} of a student object in sealed mode")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return session_of(self).request("call", {"h": handle_of(self)}, {"args": args, "kwargs": kwargs})

    def __repr__(self) -> str:
        return f"<student {object.__getattribute__(self, '_sealed_type')} object>"

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} cannot be used as a truth value in sealed mode")

    def __eq__(self, other: object) -> bool:
        raise TypeError(f"{self!r} cannot be compared in sealed mode; compare its data instead")

    def __ne__(self, other: object) -> bool:
        raise TypeError(f"{self!r} cannot be compared in sealed mode; compare its data instead")

    __hash__ = object.__hash__


def session_of(obj: RemoteObject) -> Session:
    """The worker session a proxy belongs to."""
    return object.__getattribute__(obj, "_sealed_session")


def handle_of(obj: RemoteObject) -> int:
    """The worker-side handle of a proxy.

    Raises ``RuntimeError`` for a proxy from an earlier test cell or an earlier worker process.
    """
    session = session_of(obj)
    handle = object.__getattribute__(obj, "_sealed_handle")
    if object.__getattribute__(obj, "_sealed_epoch") != session.epoch or handle is None:
        raise RuntimeError(f"{obj!r} comes from an earlier test cell or worker process")
    return handle


def bench_remote(fn: RemoteObject, args_list: Sequence[tuple[Any, ...]]) -> tuple[float, list[Any]]:
    """Time one ``bench`` request: the worker calls ``fn`` on every tuple of ``args_list``.

    The request carries the arguments and its reply carries the checksums of the results, so the
    worker can neither prepare the work before the timed window nor finish it after. Returns the
    wall-clock seconds of the round trip as measured here (from writing the already encoded request
    to reading the whole reply) and the checksums (untrusted data: a malformed reply becomes
    ``[]``, which never matches).
    """
    session = session_of(fn)
    fields = {"h": handle_of(fn)}
    values = {"args_list": [tuple(args) for args in args_list]}
    seconds, checksums = session.timed_request("bench", fields, values)
    if type(checksums) is not list:
        checksums = []
    return seconds, checksums
