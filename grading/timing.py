"""Timing helpers used by hidden tests to check that student code is vectorised.

``speed_ratio`` works the same way in an ordinary kernel (student code is a plain callable) and in
the sealed re-check (student code is a :class:`grading.sealed.proxy.RemoteObject`): in both cases
the student's results are verified against the reference before the ratio is returned, and the
student function is called once per argument tuple, inside the timed window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from grading.checksums import Checksum, as_array, checksum, checksums_match
from grading.sealed.proxy import RemoteObject, bench_remote

def _normalise_args(args_list: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [args if isinstance(args, tuple) else (args,) for args in args_list]


def _arg_key(arg: Any) -> Any:
    """Equality key of one argument: arrays by content, plain scalars by value, others by identity."""
    if isinstance(arg, np.ndarray):
        return ("ndarray", arg.dtype.str, arg.shape, hash(arg.tobytes()))
    if type(arg) in (int, float, complex, bool, str, bytes, type(None)) or isinstance(arg, np.generic):
        return (type(arg).__name__, arg)
    return ("object", id(arg))


def _check_distinct(calls: Sequence[tuple[Any, ...]]) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for n, args in enumerate(calls):
        key = tuple(_arg_key(arg) for arg in args)
        if key in seen:
            raise ValueError(f"args_list[{n}] repeats args_list[{seen[key]}]: speed_ratio needs distinct "
                             "argument tuples (a function that remembers its results would be timed on "
                             "cache hits)")
        seen[key] = n


def _time_calls(fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]], *, student: bool,
                sums: list[Checksum] | None = None) -> float:
    """Seconds spent in the calls alone; with ``sums``, each result's checksum is appended right
    after its call (untimed, and before a later call could reuse the result's memory). A student
    call includes converting its result to an array."""
    seconds = 0.0
    for args in args_list:
        start = time.perf_counter()
        result = fn(*args)
        if student:
            result = as_array(result)
        seconds += time.perf_counter() - start
        if sums is not None:
            sums.append(checksum(result, scale=not student))
        del result
    return seconds


def _verify(student_sums: Any, reference_sums: Sequence[Checksum]) -> None:
    if type(student_sums) is not list or len(student_sums) != len(reference_sums) or not all(
            checksums_match(s, r) for s, r in zip(student_sums, reference_sums)):
        raise AssertionError("results differ from the reference while timing")


def chunks(n: int, repeats: int) -> list[range]:
    """Split ``range(n)`` into ``repeats`` consecutive, nearly equal, non-empty chunks."""
    return [range(int(part[0]), int(part[-1]) + 1) for part in np.array_split(np.arange(n), repeats)]


def speed_ratio(student_fn: Callable[..., Any], reference_fn: Callable[..., Any],
                args_list: Sequence[Any], *, repeats: int = 3) -> float:
    """Time ``student_fn`` against ``reference_fn`` on the same arguments; return the best ratio.

    Each element of ``args_list`` is a tuple of positional arguments (a non-tuple element is passed
    as the single argument). ``args_list`` is split into ``repeats`` consecutive chunks. Every chunk
    is timed once for the student, and three times for the reference (twice just before, once just
    after; the fastest counts: the reference may be called any number of times); the chunk's ratio
    is student time / reference time and the smallest ratio over the chunks is returned, so a noisy
    moment on a busy machine cannot fail vectorised code.

    The student function is called exactly ONCE on each argument tuple, nothing is called on it
    before it is timed, and its results are verified from those timed calls (checksums of shape
    and values, see :func:`checksum`): a student function that remembers earlier results gains
    nothing, and a wrong result raises ``AssertionError("results differ from the reference while
    timing")``. The student's timed work includes converting each result to an array (so work
    deferred to ``__array__`` counts); in sealed mode it also includes receiving the arguments and
    fingerprinting the results in the worker (see below). That adds a cost per call of a few tens
    of microseconds at the notebook's sizes (a 4096-id batch and its 32,768 result values: about
    15x a 4 microsecond ``np.take``), so keep sealed references from being trivially fast.

    Callers must therefore pass DISTINCT argument tuples (e.g. freshly drawn random ids, never the
    same array twice) and at least ``repeats`` of them; chunks of a few calls each give steadier
    timings than single calls. ``ValueError`` is raised for fewer tuples than ``repeats`` or for
    two tuples that are equal (arrays compared by content, plain scalars by value, other objects
    by identity: a shared table next to distinct ids is fine).

    When ``student_fn`` is a sealed proxy, each chunk is one ``bench`` request that carries the
    chunk's arguments and returns the checksums of the results: the checker measures the wall-clock
    round trip (times reported by the worker are never used), so no work can be moved out of the
    timed window, and the arguments are new to the worker when the timed request arrives. Pass the
    student callable itself (``emb.forward``), not a local wrapper around it, or every call pays a
    round trip.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    calls = _normalise_args(args_list)
    if len(calls) < repeats:
        raise ValueError(f"args_list needs at least repeats={repeats} distinct argument tuples, "
                         f"got {len(calls)}")
    _check_distinct(calls)
    sealed = isinstance(student_fn, RemoteObject)
    best = math.inf
    for part in chunks(len(calls), repeats):
        chunk = calls[part.start:part.stop]
        reference_sums: list[Checksum] = []
        reference = _time_calls(reference_fn, chunk, student=False, sums=reference_sums)
        reference = min(reference, _time_calls(reference_fn, chunk, student=False))
        if sealed:
            seconds, student_sums = bench_remote(student_fn, chunk)
        else:
            student_sums = []
            seconds = _time_calls(student_fn, chunk, student=True, sums=student_sums)
        reference = min(reference, _time_calls(reference_fn, chunk, student=False))
        _verify(student_sums, reference_sums)
        best = min(best, seconds / max(reference, 1e-9))
    return best
