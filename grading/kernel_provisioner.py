"""Kernel provisioner of the ``python3-sealed`` kernel: ZeroMQ over ``ipc://`` sockets in a private directory.

The sealed kernel runs in a network namespace of its own (``grading/sandbox.py`` starts it with
bubblewrap's ``--unshare-net``), so the grader cannot reach it over TCP loopback.  Its kernelspec
names this provisioner (jupyter_client's ``metadata.kernel_provisioner``; the entry point is in
``pyproject.toml``), which, before every launch, puts the kernel manager on the ``ipc`` transport
in a directory made for this one kernel (:class:`grading.sandbox.KernelSockets`, mode 0700,
removed after the kernel):

* ``kernel/`` is named in the kernel's connection file (the launcher writes it); the sandbox binds
  it at the same path (path-based unix sockets work across network namespaces) and the kernel
  binds its five sockets there;
* ``grader/`` is named in the grader's connection file and holds hard links to those sockets, made
  as they appear; the grader connects only through them.  The kernel cannot see or change
  ``grader/``, so student code that replaces a socket in ``kernel/`` by a link to some other
  socket of the grading machine and then drops a connection does not make ZeroMQ in the grader
  reconnect to that socket.

Because the kernelspec carries the provisioner, every client of the kernel (``nbgrader autograde``
run by ``python -m grading.grade``, formgrader's Autograde button, a notebook server) talks to it
over ipc without any other configuration.  A client without this package installed does not find
the kernelspec at all (jupyter_client hides kernelspecs whose provisioner is missing), and the
launcher refuses a connection file that is not ipc: nothing falls back to TCP.

The provisioner also bounds the kernel's whole process tree (:class:`grading.memory_bound.TreeBound`
of ``c.SubmissionLimits``): with a cgroup, the launch command is prefixed so that the launcher joins
its cgroup before it starts the sandbox, and the cgroup goes with the kernel in :meth:`cleanup`;
otherwise a watchdog follows the launcher's tree.  :attr:`SealedProvisioner.tree` says afterwards
whether the bound ended the kernel.  The launch command dies with the grading process
(:func:`grading.pdeathsig.command_prefix`), and the sandbox with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Float, Unicode

from grading.memory_bound import SubmissionLimits, TreeBound
from grading.pdeathsig import command_prefix
from grading.sandbox import KERNEL_SOCKET_PREFIX, KernelSockets

log = logging.getLogger(__name__)

# sun_path of a unix socket address holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107
FALLBACK_PARENT = Path("/tmp")
LINK_POLL_SECONDS = 0.01


def make_kernel_sockets(parent: os.PathLike[str] | str | None = None) -> KernelSockets:
    """A fresh socket directory (``kernel/`` and ``grader/`` empty, all mode 0700) under ``parent``.

    Without ``parent`` it is made in the temporary directory (``TMPDIR``; ``grading.grade`` points
    that into its scratch course, so what a killed run leaves goes with the scratch), or in
    ``/tmp`` when that path is too long for unix sockets.
    """
    base = Path(parent) if parent else Path(tempfile.gettempdir())
    longest = KernelSockets(base / "sealed-ipc-XXXXXXXX").grader_prefix + "-99"
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
        if parent:
            raise ValueError(f"socket directory parent {base} is too long for unix socket paths")
        base = FALLBACK_PARENT
    sockets = KernelSockets(Path(tempfile.mkdtemp(prefix="sealed-ipc-", dir=base)).resolve())
    sockets.kernel.mkdir(mode=0o700)
    sockets.grader.mkdir(mode=0o700)
    return sockets


def socket_names(ports: Sequence[int]) -> list[str]:
    """File names of the kernel's sockets for its ipc ``ports``."""
    return [f"{KERNEL_SOCKET_PREFIX}-{port}" for port in ports]


def link_socket(source: Path, dest: Path) -> bool | None:
    """Hard-link the socket ``source`` as ``dest``: True if linked, False if ``source`` does not
    exist yet, None if it is not a socket (nothing is linked then).

    The result is checked in ``dest`` (a directory only the grader can change), so swapping
    ``source`` between a check and the link gains nothing.
    """
    try:
        os.link(source, dest, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISSOCK(os.lstat(dest).st_mode):
        return True
    dest.unlink()
    return None


def link_sockets(sockets: KernelSockets, names: Sequence[str], stop: threading.Event, deadline: float) -> None:
    """Link each of the kernel's sockets into ``sockets.grader`` as soon as it appears.

    A name whose entry is not a socket is never linked: that channel stays unconnected and the
    kernel fails to start, instead of the grader connecting to something else.
    """
    pending = list(names)
    while pending and not stop.is_set() and time.monotonic() < deadline:
        for name in list(pending):
            try:
                linked = link_socket(sockets.kernel / name, sockets.grader / name)
            except OSError as exc:
                log.error("Cannot link the kernel socket %s: %s", name, exc)
                linked = None
            if linked is None:
                log.error("%s in the kernel's socket directory is not a socket; not connecting to it", name)
            if linked is not False:
                pending.remove(name)
        stop.wait(LINK_POLL_SECONDS)


def remove_tree(top: Path) -> None:
    """Delete ``top`` and everything below it, even directories the kernel made unreadable.

    Links are not followed; errors are ignored (the directory lives in a temporary directory).
    """
    for root, dirs, _files in os.walk(top):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                try:
                    path.chmod(0o700)
                except OSError:
                    pass
    shutil.rmtree(top, ignore_errors=True)


def empty_dir(directory: Path) -> None:
    """Delete everything in ``directory`` (kept) without following links."""
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
        else:
            entry.unlink(missing_ok=True)


class SealedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """jupyter_client's local provisioner with the ipc transport in per-kernel socket directories."""

    socket_parent = Unicode(
        "",
        help="Directory in which each kernel's socket directory is made (default: the temporary "
        "directory). The socket paths must fit in 107 bytes.",
    ).tag(config=True)
    link_timeout = Float(
        600.0, help="Seconds after a launch within which the kernel must have bound its sockets."
    ).tag(config=True)

    sockets: KernelSockets | None = None
    tree: TreeBound | None = None  # the bound on the kernel's process tree (of the last launch)
    _linker: threading.Thread | None = None
    _stop_linking: threading.Event | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Make the socket directory (once per kernel manager) and put the manager on ipc in ``grader/``."""
        km = self.parent
        if self.sockets is None:
            self.sockets = make_kernel_sockets(self.socket_parent or None)
            self.log.debug("Sockets of kernel %s in %s", self.kernel_id, self.sockets.top)
        km.transport = "ipc"
        km.cache_ports = False
        km.ip = self.sockets.grader_prefix
        kwargs = await super().pre_launch(**kwargs)
        if self.tree is not None:
            self.tree.close()
        self.tree = SubmissionLimits(parent=self).in_force().tree()
        kwargs["cmd"] = [*command_prefix(), *self.tree.prefix(), *kwargs["cmd"]]
        return kwargs

    async def post_launch(self, **kwargs: Any) -> None:
        """Start linking the kernel's sockets into the grader's directory as the kernel binds them."""
        await super().post_launch(**kwargs)
        assert self.sockets is not None
        if self.tree is not None and self.process is not None:
            self.tree.started(self.process.pid)
        self._stop_linking = threading.Event()
        self._linker = threading.Thread(
            target=link_sockets,
            args=(self.sockets, socket_names(self.parent.ports), self._stop_linking,
                  time.monotonic() + self.link_timeout),
            name=f"link-sockets-{self.kernel_id}",
            daemon=True,
        )
        self._linker.start()

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the socket directory; on a restart, empty it for the next launch instead."""
        await super().cleanup(restart=restart)
        if self.tree is not None:
            self.tree.close()  # kills what is left of the kernel's tree, removes its cgroup
        if self._stop_linking is not None and self._linker is not None:
            self._stop_linking.set()
            self._linker.join()
            self._linker = self._stop_linking = None
        if self.sockets is None:
            return
        if restart:
            if self.sockets.kernel.is_dir():
                if os.geteuid() == 0:
                    os.chown(self.sockets.kernel, os.geteuid(), os.getegid())  # the launcher hands it over again
                self.sockets.kernel.chmod(0o700)
                empty_dir(self.sockets.kernel)
                empty_dir(self.sockets.grader)
            return
        remove_tree(self.sockets.top)
        self.sockets = None
