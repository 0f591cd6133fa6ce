"""Kernel provisioner of the ``python3-sealed`` kernel: ZeroMQ over ``ipc://`` sockets in a private directory.

The sealed kernel runs in a network namespace of its own (``grading/sandbox.py`` starts it with
bubblewrap's ``--unshare-net``), so the grader cannot reach it over TCP loopback.  Its kernelspec
names this provisioner (jupyter_client's ``metadata.kernel_provisioner``; the entry point is in
``pyproject.toml``), which, before every launch, puts the kernel manager on the ``ipc`` transport
with its socket paths in a directory made for this one kernel (mode 0700).  The sandbox binds that
directory at the same path; path-based unix sockets work across network namespaces.  The
directory is removed when the kernel manager cleans up after the kernel.

Because the kernelspec carries the provisioner, every client of the kernel (``nbgrader autograde``
run by ``python -m grading.grade``, formgrader's Autograde button, a notebook server) talks to it
over ipc without any other configuration.  A client without this package installed does not find
the kernelspec at all (jupyter_client hides kernelspecs whose provisioner is missing), and the
launcher refuses a connection file that is not ipc: nothing falls back to TCP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

#: ``ip`` of the connection file is ``<socket dir>/kernel``; ZeroMQ binds ``kernel-1`` to ``kernel-5``.
SOCKET_PREFIX = "kernel"
# A unix socket path holds at most 107 bytes; the port suffix adds "-N".
MAX_SOCKET_PATH = 100
FALLBACK_PARENT = Path("/tmp")


def make_socket_dir(parent: os.PathLike[str] | str | None = None) -> Path:
    """A fresh, empty directory (mode 0700) for one kernel's sockets, under ``parent``.

    Without ``parent`` it is made in the temporary directory (``TMPDIR``; ``grading.grade``
    points that into its scratch course, so what a killed run leaves goes with the scratch), or
    in ``/tmp`` when that path is too long for unix sockets.
    """
    base = Path(parent) if parent else Path(tempfile.gettempdir())
    probe = base / "sealed-ipc-XXXXXXXX" / f"{SOCKET_PREFIX}-99"
    if len(os.fsencode(probe)) > MAX_SOCKET_PATH:
        if parent:
            raise ValueError(f"socket directory parent {base} is too long for unix socket paths")
        base = FALLBACK_PARENT
    return Path(tempfile.mkdtemp(prefix="sealed-ipc-", dir=base)).resolve()


class SealedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """jupyter_client's local provisioner with the ipc transport in a per-kernel socket directory."""

    socket_parent = Unicode(
        "",
        help="Directory in which each kernel's socket directory is made (default: the temporary "
        "directory). The socket paths must stay under 100 bytes.",
    ).tag(config=True)

    socket_dir: Path | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Create the socket directory (once per kernel manager) and switch the manager to ipc."""
        km = self.parent
        if self.socket_dir is None:
            self.socket_dir = make_socket_dir(self.socket_parent or None)
            self.log.debug("Sockets of kernel %s in %s", self.kernel_id, self.socket_dir)
        km.transport = "ipc"
        km.cache_ports = False
        km.ip = str(self.socket_dir / SOCKET_PREFIX)
        return await super().pre_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the socket directory, or on a restart give it back to the grader for the next launch."""
        await super().cleanup(restart=restart)
        if self.socket_dir is None:
            return
        if restart:
            if os.geteuid() == 0 and self.socket_dir.is_dir():
                os.chown(self.socket_dir, os.geteuid(), os.getegid())  # the launcher hands it over again
            return
        remove_tree(self.socket_dir)
        self.socket_dir = None


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
