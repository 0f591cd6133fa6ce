"""A daemon thread that checks something every few milliseconds until the check says it is done."""

from __future__ import annotations

import threading
from typing import TypeVar

P = TypeVar("P", bound="Poller")


class Poller:
    """Call :meth:`check` every ``poll_seconds`` in a daemon thread until it returns True or
    :meth:`stop` is called."""

    def __init__(self, name: str, poll_seconds: float):
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self: P) -> P:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def check(self) -> bool:
        """One check; True ends the polling."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self.check():
                return
