"""One JupyterLab server per workspace, started on demand and reused while it is alive.

The server listens on 127.0.0.1 with a random token; what is needed to reach it is recorded in
``.tito/lab.json`` (readable by the student only).  A recorded server is reused only if its
process exists and it answers ``/api/status`` with that token.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tito.errors import TitoError
from tito.status import STATE_DIR

log = logging.getLogger(__name__)

LAB_STATE = "lab.json"
LAB_LOG = "lab.log"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class LabServer:
    """A JupyterLab server started for one workspace."""

    pid: int
    port: int
    token: str
    root_dir: str

    def url(self, relative: Path | None = None) -> str:
        """URL of the Lab (or of a notebook in it, relative to the workspace), token included."""
        path = "lab" if relative is None else "lab/tree/" + urllib.parse.quote(relative.as_posix())
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"


def _state_path(workspace: Path) -> Path:
    return workspace / STATE_DIR / LAB_STATE


def recorded_server(workspace: Path) -> LabServer | None:
    """The server recorded for the workspace (alive or not)."""
    try:
        return LabServer(**json.loads(_state_path(workspace).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _process_exists(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, not a zombie waiting to be reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_alive(server: LabServer) -> bool:
    """Does the server's process exist and answer ``/api/status`` with its token?"""
    if not _process_exists(server.pid):
        return False
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/status",
                                     headers={"Authorization": f"token {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running_server(workspace: Path) -> LabServer | None:
    """The workspace's server if it is alive, else None."""
    server = recorded_server(workspace)
    return server if server is not None and is_alive(server) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_command(workspace: Path, port: int, token: str) -> list[str]:
    """The command line of the workspace's JupyterLab server."""
    cmd = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={workspace}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def start_server(workspace: Path, *, timeout: float = START_TIMEOUT) -> LabServer:
    """Start JupyterLab for the workspace and wait (at most ``timeout`` s) until it answers."""
    state = _state_path(workspace)
    state.parent.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(24)
    with open(state.parent / LAB_LOG, "ab") as out:
        proc = subprocess.Popen(lab_command(workspace, port, token), cwd=workspace, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(proc.pid, port, token, str(workspace))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TitoError(f"JupyterLab exited at start (status {proc.returncode}); see {state.parent / LAB_LOG}")
        if is_alive(server):
            fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(server), f)
            return server
        time.sleep(0.25)
    _terminate(proc.pid)
    raise TitoError(f"JupyterLab did not answer within {timeout:g} s; see {state.parent / LAB_LOG}")


def ensure_server(workspace: Path) -> tuple[LabServer, bool]:
    """The workspace's live server, started if needed; True if an existing one is reused."""
    server = running_server(workspace)
    if server is not None:
        return server, True
    return start_server(workspace), False


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the server's process group, SIGKILL after ``timeout`` s."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll for its disappearance
            if not _process_exists(pid):
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_server(workspace: Path) -> LabServer | None:
    """Stop the workspace's server if it is alive; return what was stopped."""
    server = running_server(workspace)
    if server is not None:
        _terminate(server.pid)
    _state_path(workspace).unlink(missing_ok=True)
    return server
