"""Fingerprints of results, compared between the sealed worker and the checker.

The worker computes them inside the timed ``bench`` request (:func:`call_and_checksum`); the
checker compares them with the reference's (:func:`checksums_match`), treating the worker's as
hostile data. Kept apart from :mod:`grading.timing` so the worker imports no timing code and the
sealed package and the timing helpers do not import each other in a cycle.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Relative tolerance (w.r.t. the sum of absolute reference values) when comparing checksums.
CHECKSUM_RTOL = 1e-5

Checksum = list  # [shape, sum, weighted sum, abs sum] or ["unconvertible"]


@functools.lru_cache(maxsize=8)
def _weights(n: int) -> np.ndarray:
    weights = (np.arange(n) % 13 - 6).astype(np.float64)
    weights.flags.writeable = False
    return weights


def as_array(result: Any) -> np.ndarray | None:
    """Convert a function result to an ndarray for checksumming (``None`` if impossible)."""
    if type(result) is np.ndarray:
        return result
    try:
        return np.asarray(result)
    except Exception:
        return None


def checksum(result: Any, *, scale: bool = True) -> Checksum:
    """Cheap fingerprint of a result: ``[shape, sum, position-weighted sum, sum of abs]``.

    Complex results are fingerprinted over their real and imaginary parts. With ``scale=False``
    the sum of abs (only ever read from the reference's checksum, as the tolerance scale) is left
    out. Never raises.

    The sums are accumulated in float64; the weighted sum uses ``einsum``, not ``flat @ weights``:
    no BLAS call, whose threads can take milliseconds to wake on a busy machine (this runs inside
    the student's timed window).
    """
    try:
        arr = as_array(result)
        if arr is None or arr.dtype.kind not in "biufc":
            return ["unconvertible"]
        shape = [int(n) for n in arr.shape]
        if arr.dtype.kind == "c":
            flat = np.concatenate([arr.real.ravel(), arr.imag.ravel()]).astype(np.float64)
        else:
            flat = arr.astype(np.float64, copy=False).ravel()
        total = float(flat.sum())
        weighted = float(np.einsum("i,i->", flat, _weights(flat.size)))
        if not scale:
            return [shape, total, weighted]
        return [shape, total, weighted, float(np.abs(flat).sum())]
    except Exception:
        return ["unconvertible"]


def _close(a: Any, b: float, scale: float) -> bool:
    if type(a) not in (int, float):
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= CHECKSUM_RTOL * max(scale, 1.0)


def checksums_match(student: Any, reference: Checksum) -> bool:
    """True when a student checksum (possibly hostile data) matches the reference checksum."""
    if type(student) is not list or not student:
        return False
    if reference[0] == "unconvertible" or student[0] == "unconvertible":
        return student == reference
    if len(student) < 3 or type(student[0]) is not list or student[0] != reference[0]:
        return False
    scale = reference[3]
    return _close(student[1], reference[1], scale) and _close(student[2], reference[2], scale)


def call_and_checksum(fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Checksum]:
    """Call ``fn`` on every argument tuple and fingerprint each result right away.

    This is what the sealed worker does inside the timed ``bench`` request: converting a result
    to an array belongs to the call, so work deferred to ``__array__`` or to a lazy result is
    measured too.
    """
    sums: list[Checksum] = []
    for args in args_list:
        sums.append(checksum(fn(*args), scale=False))
    return sums
