"""Worker process of the sealed re-check: runs student code and answers requests from the checker.

Started by :mod:`grading.sealed.checker` as::

    [*prefix, python, "-I", "-c", BOOTSTRAP, <dir containing grading/>, <read fd>, <write fd>]

``-I`` keeps the caller's ``PYTHONPATH``, ``PYTHONSTARTUP``, user site-packages and current
directory out of the worker; ``grading`` is found through the explicit directory argument, so
neither ``PYTHONPATH`` nor an editable install is required (site-packages is still used, for numpy
and IPython). ``python -m grading.sealed.worker <read fd> <write fd>`` works too when ``grading``
is importable.

What the worker needs to see: the Python installation (interpreter, stdlib, site-packages with
numpy and IPython), the ``grading`` package directory, its (empty, writable) working directory and
the two inherited pipe file descriptors. It needs no network, no repository files and no
environment beyond ``PATH``/``HOME``. Its stdin/stdout/stderr are ``/dev/null`` once it runs
student code; the request channel uses only the two pipe descriptors.

A bubblewrap prefix that satisfies this (paths are examples; bind the real interpreter prefix,
the virtualenv and the package directory at their own paths)::

    bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr
          --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin
          --ro-bind <base python prefix> <same> --ro-bind <venv> <same>
          --ro-bind <repo>/grading <repo>/grading --bind <workdir> <workdir>
          --proc /proc --dev /dev --chdir <workdir> --

The prefix must keep inherited file descriptors open (bwrap and prlimit do).

Nothing this process sends is trusted by the checker: student code runs here and may replace
any of it.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any

from grading.sealed import protocol
from grading.checksums import call_and_checksum
from grading.allocator import keep_freed_memory
from grading.pdeathsig import die_with_parent

#: ``-c`` program used to start the worker; argv: grading root, read fd, write fd.
BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from grading.sealed.worker import main; main(int(sys.argv[2]), int(sys.argv[3]))"
)


class HandleMarker:
    """Wrapper forcing a result to be returned as a handle, never by value."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj


class Worker:
    """Holds the IPython shell and the registry of objects the checker refers to by handle."""

    def __init__(self) -> None:
        self.shell = make_shell()
        self.registry: dict[int, Any] = {}
        self.next_id = 1

    # -- values ---------------------------------------------------------------------------
    def _handle(self, obj: Any) -> dict[str, Any]:
        ident = self.next_id
        self.next_id += 1
        self.registry[ident] = obj
        try:
            name = protocol.safe_text(type(obj).__name__, protocol.TYPE_NAME_CHARS)
        except BaseException:
            name = "object"
        return {"t": "h", "id": ident, "type": name}

    def _lookup(self, ident: int, _name: str) -> Any:
        try:
            return self.registry[ident]
        except KeyError:
            raise ValueError(f"unknown or released student object handle {ident}") from None

    def decode(self, j: Any, blobs: list[memoryview]) -> Any:
        return protocol.Decoder(blobs, self._lookup).decode(j)

    def encode(self, value: Any) -> tuple[Any, list[bytes]]:
        encoder = protocol.Encoder(self._handle)
        return encoder.encode(value), encoder.blobs

    # -- operations -----------------------------------------------------------------------
    def op_exec_cells(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        results = []
        for source in self.decode(req["sources"], blobs):
            outcome = self.shell.run_cell(str(source), store_history=False)
            results.append(bool(outcome.success))
        return results

    def op_getglobal(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        name = str(req["name"])
        if name not in self.shell.user_ns:
            raise NameError(f"name '{name}' is not defined")
        return HandleMarker(self.shell.user_ns[name])

    def op_loadglobal(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        """A top-level student name as a test cell reads it: ``{"module": name}`` for a module
        (the checker uses its own import), else ``{"value": v}`` (plain data by value, anything
        else as a handle)."""
        name = str(req["name"])
        if name not in self.shell.user_ns:
            raise NameError(f"name '{name}' is not defined")
        value = self.shell.user_ns[name]
        if isinstance(value, types.ModuleType):
            return {"module": str(value.__name__)}
        return {"value": value}

    def op_setglobal(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        self.shell.user_ns[str(req["name"])] = self.decode(req["value"], blobs)
        return None

    def op_delglobal(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        name = str(req["name"])
        if name not in self.shell.user_ns:
            raise NameError(f"name '{name}' is not defined")
        del self.shell.user_ns[name]
        return None

    def op_globalnames(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        """The student's own top-level names (IPython's hidden ones left out)."""
        hidden = self.shell.user_ns_hidden
        return sorted(str(k) for k in self.shell.user_ns
                      if type(k) is str and k not in hidden and not k.startswith("_"))

    def op_getattr(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        return getattr(self._lookup(req["h"], ""), str(req["name"]))

    def op_setattr(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        setattr(self._lookup(req["h"], ""), str(req["name"]), self.decode(req["value"], blobs))
        return None

    def op_call(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        func = self._lookup(req["h"], "")
        args = self.decode(req["args"], blobs)
        kwargs = self.decode(req["kwargs"], blobs)
        return func(*args, **kwargs)

    def op_release(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        if req.get("all"):
            self.registry.clear()
        for ident in req.get("ids", []):
            self.registry.pop(ident, None)
        return None

    def op_bench(self, req: dict[str, Any], blobs: list[memoryview]) -> Any:
        """Call the function on every argument tuple of the request and return the checksums of
        the results (the checker times the whole round trip and verifies the checksums).

        The arguments arrive with this request and the checksums leave with its reply, so the
        work cannot be done before or after the timed window. Results are converted to arrays
        while checksumming, so work deferred to ``__array__`` is measured too.
        """
        func = self._lookup(req["h"], "")
        calls = [tuple(args) for args in self.decode(req["args_list"], blobs)]
        return call_and_checksum(func, calls)

    def dispatch(self, req: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[bytes]]:
        """Run one request; return the response header and blobs."""
        op: Callable[[dict[str, Any], list[memoryview]], Any] | None = getattr(
            self, f"op_{req.get('op')}", None)
        try:
            if op is None:
                raise ValueError(f"unknown operation {req.get('op')!r}")
            value = op(req, blobs)
            if isinstance(value, HandleMarker):
                return {"ok": self._handle(value.obj)}, []
            encoded, out_blobs = self.encode(value)
            return {"ok": encoded}, out_blobs
        except BaseException as exc:  # noqa: BLE001 - everything student code raises is reported
            return {"error": protocol.describe_exception(exc)}, []


def make_shell() -> Any:
    """Create the IPython shell that executes student cells (history disabled)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


def _silence_std_streams() -> None:
    """Point fds 0, 1 and 2 at /dev/null so student output never reaches the channel or a terminal."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def main(rfd: int, wfd: int) -> None:
    """Entry point: serve requests until the checker closes the channel."""
    die_with_parent(os.getppid())  # the checker, or the sandbox's init
    keep_freed_memory()  # as the checker does while it times the reference
    for fd in (rfd, wfd):  # shell escapes (!cmd) must not inherit the channel
        os.set_inheritable(fd, False)
    sys.argv = ["sealed-worker"]
    channel = protocol.FrameChannel(rfd, wfd)
    worker = Worker()
    channel.send({"ok": "ready", "pid": os.getpid()}, [])
    _silence_std_streams()
    while True:
        try:
            frame = channel.recv()
        except protocol.ProtocolError:
            os._exit(3)
        except (protocol.ChannelClosed, OSError):
            os._exit(0)
        if frame is None:
            os._exit(0)
        header, blobs = worker.dispatch(*frame)
        try:
            channel.send(header, blobs)
        except ValueError:
            # e.g. a non-finite float sneaked into the header; report instead of dying
            channel.send({"error": {"mro": ["ValueError"], "msg": "unencodable result"}}, [])
        except OSError:
            os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
