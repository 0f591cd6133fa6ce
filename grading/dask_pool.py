"""Grading jobs on a Dask distributed cluster (``python -m grading.grade --scheduler ADDRESS``).

Each job (:class:`grading.run_one.Job`, plain data: the staged files and the packed template) runs
:func:`grading.run_one.grade_one` on a Dask worker and its :class:`StudentResult` comes back as
data; the coordinator alone writes the gradebook.  Workers need the same software as the grading
machine (this package, nbgrader, bubblewrap) but no access to the course folder.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from grading import run_one
from grading.run_one import Job, StudentResult

RESULT_GRACE = 600.0  # seconds a result may take beyond the job's own bound (queueing, transfer)


def _run_on_cluster(client, job: Job) -> StudentResult:  # noqa: ANN001 (distributed.Client)
    future = client.submit(run_one.grade_one, job, pure=False, key=f"grade-{job.student}-{id(job):x}")
    try:
        return future.result(timeout=job.timeout + RESULT_GRACE)
    finally:
        future.release()


def cluster_threads(address: str, timeout: float = 60.0) -> int:
    """How many tasks the cluster runs at once (its workers' threads)."""
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        return max(1, sum(client.nthreads().values()))


def dask_submitter(address: str, in_flight: int | None = None,
                   timeout: float = 60.0) -> tuple[Callable[[Job], Future], Callable[[], None], int]:
    """``(submit, close, in_flight)``: run jobs on the cluster at ``address``, at most ``in_flight``
    at a time (default: the cluster's threads)."""
    from distributed import Client

    client = Client(address, timeout=timeout)
    slots = in_flight or max(1, sum(client.nthreads().values()))
    bridge = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="dask-job")

    def submit(job: Job) -> Future:
        return bridge.submit(_run_on_cluster, client, job)

    def close() -> None:
        bridge.shutdown(wait=True)
        client.close()

    return submit, close, slots
