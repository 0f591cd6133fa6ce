"""Timing helpers used by hidden tests to check that student code is vectorised.

:func:`check_speed` is the rule every speed test and every self-timing cell applies: the student
function is timed against a reference by :func:`speed_ratio` on fresh arguments, up to
``attempts`` times, and passes if any attempt's ratio is below the limit (a busy machine can slow
one measurement of correct code several times over; a Python loop is slower every time).

``speed_ratio`` works the same way in an ordinary kernel (student code is a plain callable) and in
the sealed re-check (student code is a :class:`grading.sealed.proxy.RemoteObject`): in both cases
the student's results are verified against the reference before the ratio is returned, and the
student function is called once per argument tuple, inside the timed window. In the sealed
re-check the worker's whole process tree is stopped for the whole of a speed check except while a
request to it is in flight (:mod:`grading.sealed.freeze`): processes or threads the student left
running cannot load the machine while the checker times the reference.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grading.allocator import keep_freed_memory
from grading.checksums import Checksum, as_array, checksum, checksums_match
from grading.sealed import freeze
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


def _check_distinct(calls: Sequence[tuple[Any, ...]], seen: dict[tuple[Any, ...], str] | None = None,
                    name: str = "args_list") -> None:
    """Raise ``ValueError`` if two tuples of ``calls``, or one of them and a tuple already in
    ``seen`` (key -> where it came from; updated in place), are equal."""
    seen = {} if seen is None else seen
    for n, args in enumerate(calls):
        key = tuple(_arg_key(arg) for arg in args)
        if key in seen:
            raise ValueError(f"{name}[{n}] repeats {seen[key]}: speed_ratio needs distinct "
                             "argument tuples (a function that remembers its results would be timed on "
                             "cache hits)")
        seen[key] = f"{name}[{n}]"


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
    moment on a busy machine cannot fail vectorised code; chunks whose reference was stalled (more
    than :data:`STALLED_REFERENCE` times the median reference time per call) are left out, so a
    stall while the reference runs cannot pass slow code (:func:`best_ratio`).

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
    timed window, and the arguments are new to the worker when the timed request arrives. The
    worker's process tree is stopped while the reference is timed and runs only for the student's
    calls (:func:`grading.sealed.freeze.quiet`; about 0.7 ms per chunk to resume and stop it, outside
    the timed windows). Pass the
    student callable itself (``emb.forward``), not a local wrapper around it, or every call pays a
    round trip.

    Freed memory is kept for reuse in this process (:func:`grading.allocator.keep_freed_memory`,
    as in the sealed worker), so the reference's results never pay for fresh pages that the
    student's do not.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    calls = _normalise_args(args_list)
    if len(calls) < repeats:
        raise ValueError(f"args_list needs at least repeats={repeats} distinct argument tuples, "
                         f"got {len(calls)}")
    _check_distinct(calls)
    keep_freed_memory()  # results reuse freed memory here, as they do in the sealed worker
    sealed = isinstance(student_fn, RemoteObject)
    measured: list[tuple[float, float, int]] = []  # (student seconds, reference seconds, calls)
    with freeze.quiet():
        for part in chunks(len(calls), repeats):
            chunk = calls[part.start:part.stop]
            reference_sums: list[Checksum] = []
            reference = _time_calls(reference_fn, chunk, student=False, sums=reference_sums)
            reference = min(reference, _time_calls(reference_fn, chunk, student=False))
            with freeze.running():
                if sealed:
                    seconds, student_sums = bench_remote(student_fn, chunk)
                else:
                    student_sums = []
                    seconds = _time_calls(student_fn, chunk, student=True, sums=student_sums)
            reference = min(reference, _time_calls(reference_fn, chunk, student=False))
            _verify(student_sums, reference_sums)
            measured.append((seconds, reference, len(chunk)))
    return best_ratio(measured)


STALLED_REFERENCE = 2.0  # a chunk whose reference took longer than this times the median does not count


def best_ratio(measured: Sequence[tuple[float, float, int]]) -> float:
    """Smallest student / reference ratio over chunks ``(student s, reference s, calls)``, leaving
    out chunks whose reference took more than :data:`STALLED_REFERENCE` times the median reference
    time per call: the machine stalled while the reference ran (another process, a stop), and such
    a chunk would flatter slow code. The student's own slow chunks are left in (the min ignores them)."""
    median = statistics.median(reference / calls for _, reference, calls in measured)
    kept = [(seconds, reference) for seconds, reference, calls in measured
            if reference / calls <= STALLED_REFERENCE * median]
    return min(seconds / max(reference, 1e-9) for seconds, reference in kept)


ATTEMPTS = 3  # measurements a speed check may take; the notebook's text and self-timing cells say so


@dataclass(frozen=True)
class SpeedCheck:
    """Outcome of :func:`check_speed`: the limit, how many attempts were allowed, and the ratio
    (student time / reference time, :func:`speed_ratio`) of every attempt made, in order."""

    limit: float
    attempts: int
    ratios: tuple[float, ...]

    @property
    def passed(self) -> bool:
        """Whether any attempt was below the limit (the best counts)."""
        return self.best < self.limit

    @property
    def best(self) -> float:
        return min(self.ratios, default=math.inf)

    def summary(self, what: str, against: str) -> str:
        """One line for students: ``what`` took the best ratio of ``against``, the limit, every
        measurement, and the verdict ("within the limit" or "TOO SLOW")."""
        measured = ", ".join(f"{r:.3g}x" for r in self.ratios)
        verdict = "within the limit" if self.passed else "TOO SLOW"
        return (f"{what} took {self.best:.3g}x the time of {against} (limit: less than {self.limit:g}x; "
                f"measured {len(self.ratios)} of up to {self.attempts} times, the best counts: "
                f"{measured}): {verdict}")


def check_speed(student_fn: Callable[..., Any], reference_fn: Callable[..., Any],
                make_args: Callable[[], Sequence[Any]], *, limit: float, attempts: int = ATTEMPTS,
                repeats: int = 3) -> SpeedCheck:
    """Time ``student_fn`` against ``reference_fn`` up to ``attempts`` times; pass if any attempt's
    ratio is below ``limit``.

    Each attempt calls ``make_args()`` for a new list of argument tuples and measures it with
    :func:`speed_ratio` (``repeats`` chunks, the best chunk counts), so every guarantee of
    ``speed_ratio`` holds for every attempt: the student function is called exactly once per
    argument tuple, its results are verified from the timed calls (a wrong result raises
    ``AssertionError`` at once), and in sealed mode the checker times the round trip. Attempts
    stop at the first ratio below the limit. The tuples of all attempts together must be distinct
    (``ValueError`` otherwise: a function that remembers results would be timed on cache hits in
    the later attempts), so ``make_args`` must draw fresh arguments on each call; all of them are
    kept alive until the check ends, so an object compared by identity is never confused with a
    later one at the same address.

    Correct code that one busy moment slowed down passes on a later attempt, while a Python loop
    over the ids (10x or more over these limits) fails every attempt; its extra grading time is
    bounded by ``attempts`` measurements.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    seen: dict[tuple[Any, ...], str] = {}
    kept: list[list[tuple[Any, ...]]] = []
    ratios: list[float] = []
    with freeze.quiet():
        for attempt in range(attempts):
            calls = _normalise_args(make_args())
            _check_distinct(calls, seen, name=f"attempt {attempt + 1}'s make_args()")
            kept.append(calls)
            ratios.append(speed_ratio(student_fn, reference_fn, calls, repeats=repeats))
            if ratios[-1] < limit:
                break
    return SpeedCheck(limit=limit, attempts=attempts, ratios=tuple(ratios))
