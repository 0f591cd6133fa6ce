"""Sealed re-check: student code runs in a worker process, test cells in a clean checker.

See :func:`run_sealed`.
"""

from grading.sealed.checker import Verdict, VerdictStatus, WorkerStartError, run_sealed
from grading.sealed.protocol import StudentError, WorkerCrashed, WorkerProtocolError, WorkerTimeout
from grading.sealed.proxy import RemoteObject

__all__ = [
    "RemoteObject",
    "StudentError",
    "Verdict",
    "VerdictStatus",
    "WorkerCrashed",
    "WorkerProtocolError",
    "WorkerStartError",
    "WorkerTimeout",
    "run_sealed",
]
