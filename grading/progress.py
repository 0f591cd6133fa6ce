"""Progress of a batch: a bar on a terminal (tqdm), a plain line per submission otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from grading.run_one import StudentResult


def describe(result: StudentResult) -> str:
    """``alice graded 3/3 in 12.3 s`` (with ``(resumed)`` when taken from the ledger)."""
    score = f" {result.score:g}/{result.max_score:g}" if result.score is not None and result.max_score is not None else ""
    where = " (graded before)" if result.resumed else ""
    retry = f" after {result.attempts} attempts" if result.attempts > 1 else ""
    return f"{result.student} {result.status}{score} in {result.seconds:.1f} s{retry}{where}"


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far, or None before the first result."""
    if done <= 0:
        return None
    return elapsed / done * (total - done)


class Progress:
    """Counts, ETA and the slowest submission so far, as a bar (TTY) or one line per submission."""

    def __init__(self, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar_wanted = self.stream.isatty() if bar is None else bar
        self.total = 0
        self.done = 0
        self.start = time.monotonic()
        self.slowest: tuple[float, str] | None = None
        self._bar = None

    def begin(self, total: int) -> None:
        """The batch knows its submissions."""
        self.total, self.start = total, time.monotonic()
        if self.bar_wanted:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="sub", dynamic_ncols=True, desc="grading")

    def update(self, result: StudentResult) -> None:
        """One submission finished."""
        self.done += 1
        if not result.resumed and (self.slowest is None or result.seconds > self.slowest[0]):
            self.slowest = (result.seconds, result.student)
        slowest = f"slowest so far: {self.slowest[1]} {self.slowest[0]:.1f} s" if self.slowest else ""
        if self._bar is not None:
            self._bar.set_postfix_str(f"{result.student} {result.status}; {slowest}", refresh=False)
            self._bar.update(1)
            return
        eta = eta_seconds(self.done, self.total, time.monotonic() - self.start)
        eta_text = f"ETA {eta:.0f} s" if eta is not None and self.done < self.total else "done"
        print(f"[{self.done}/{self.total}] {describe(result)} ({eta_text}; {slowest})", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
