"""Bubblewrap sandbox for running student code while grading.

Student code (the notebook kernel during ``nbgrader autograde`` and the sealed
worker process) runs inside a bubblewrap sandbox that sees:

* the system directories needed to run programs, read-only (``/usr`` and the
  ``/bin``, ``/lib*`` links, a handful of files from ``/etc``);
* the Python installation and this ``grading`` package, read-only;
* exactly one writable directory (the notebook's directory), which is also the
  working directory;
* a private ``/tmp`` (size-limited tmpfs), ``/proc`` and a minimal ``/dev``.

Everything else (the course root, ``source/``, ``gradebook.db``, other
students' submissions, the grader's home directory) does not exist inside.
Directories that only lead to a bound path are created with mode ``0111`` so
they can be traversed but not listed (except the parents of this package,
which Python must list to import it; they hold nothing but the bound paths).

Network: every sandbox has a network namespace of its own (loopback only,
nothing of the grading machine is reachable).  The sealed worker talks to the
checker over inherited pipes; the notebook kernel talks to nbclient over
ZeroMQ ``ipc://`` sockets in a directory of its own (:class:`KernelSockets`,
made by :mod:`grading.kernel_provisioner`, which the kernelspec names), bound
into the sandbox at the same path: path-based unix sockets work across network
namespaces.

Limits: ``prlimit`` sets address space, processes and file size inside the
sandbox.  Linux exempts uid 0 from ``RLIMIT_NPROC``, and bubblewrap started
by root maps the sandbox to root (``--uid`` only renames root inside a user
namespace), so when the grader runs as root the sandboxed command is started
without a user namespace and switched by ``setpriv`` to a fresh unprivileged
uid (``SANDBOX_UID_BASE`` onwards) with no capabilities; its work directory
is handed to that uid.  Memory is limited per process here (``RLIMIT_AS``);
the whole process tree of a submission is bounded by :mod:`grading.memory_bound`
(a cgroup per tree where the machine has one, else a watchdog), which the
kernel's provisioner and the sealed checker apply around this sandbox: the
cgroup is joined before bubblewrap starts.

Run as a script, this module is the launcher of the ``python3-sealed``
kernel::

    python grading/sandbox.py kernel [--memory-bytes N] [--workdir DIR] CONNECTION_FILE [ARGS...]

It sandboxes ``ipykernel`` with the current directory (the autograded
notebook's directory, set by nbclient) and the kernel's socket directory as
the only writable paths.  It refuses a connection file whose transport is not
``ipc`` or whose socket directory is not private (see :func:`kernel_sockets`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

SEALED_KERNEL_NAME = "python3-sealed"
# Entry point (group jupyter_client.kernel_provisioners, see pyproject.toml) of
# grading.kernel_provisioner.SealedProvisioner, named by the sealed kernelspec.
KERNEL_PROVISIONER = "sealed-ipc-provisioner"
# The kernel's ZeroMQ sockets are <socket directory>/kernel-1 to kernel-5 (see KernelSockets).
KERNEL_SOCKET_PREFIX = "kernel"
DEFAULT_MEMORY_BYTES = 4 * 1024**3
DEFAULT_NPROC = 512
DEFAULT_FSIZE_BYTES = 256 * 1024**2
DEFAULT_TMP_BYTES = 512 * 1024**2
# Unprivileged uids (and gids) for sandboxes started by root: one at random per sandbox, so the
# RLIMIT_NPROC count of one sandbox is not shared with others running at the same time.  The
# range has no users in /etc/passwd (nothing in the kernel or the worker needs a user name).
SANDBOX_UID_BASE = 1_950_000_000
SANDBOX_UID_COUNT = 1_000_000

# Where the grading package is importable from inside the sandbox.
SANDBOX_LIB_DIR = Path("/opt/sandbox-lib")

_TOP_LEVEL_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_FILES = (
    "alternatives",
    "fonts",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "timezone",
)
_SYSTEM_MOUNTS = tuple(
    Path(p) for p in ("/usr", "/etc", "/proc", "/dev", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
)
_PREEXISTING_DIRS = (Path("/"), Path("/tmp"), Path("/opt"), SANDBOX_LIB_DIR)
_ENV_PASSTHROUGH = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "NBGRADER_EXECUTION",
    "MPLBACKEND",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "PYTHONHASHSEED",
)


def grading_package_dir() -> Path:
    """Directory of the ``grading`` package (resolved)."""
    return Path(__file__).resolve().parent


def python_roots() -> list[Path]:
    """Resolved directories of the running Python installation (venv and base)."""
    roots: list[Path] = []
    for raw in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        path = Path(raw).resolve()
        if path not in roots:
            roots.append(path)
    return roots


def _is_within(path: Path, parent: Path) -> bool:
    """True if ``path`` is ``parent`` or below it."""
    return path == parent or parent in path.parents


def _system_args() -> list[str]:
    """Read-only binds of the system directories needed to run programs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL_SYSTEM:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    for name in _ETC_FILES:
        host = Path("/etc") / name
        args += ["--ro-bind-try", str(host), str(host)]
    return args


def _covered(path: Path, roots: Iterable[Path]) -> bool:
    """True if ``path`` lies inside one of ``roots``."""
    return any(_is_within(path, root) for root in roots)


def _hidden_parent_args(targets: Sequence[Path], listable: Sequence[Path] = ()) -> list[str]:
    """Create the parents of bind targets as traverse-only (0111) directories.

    Parents that already exist in the sandbox (``/``, ``/tmp``, the system
    mounts), that are bind targets themselves, or that lead to a ``listable``
    path (Python's import system lists the directories on ``sys.path``, and
    the sealed worker puts the parent of the ``grading`` package there) are
    left to bubblewrap, which creates them with mode 0755.
    """
    keep_listable = {parent for path in listable for parent in path.parents}
    parents: set[Path] = set()
    for target in targets:
        for parent in target.parents:
            if parent in _PREEXISTING_DIRS or _covered(parent, _SYSTEM_MOUNTS) or parent in targets:
                continue
            if parent in keep_listable:
                continue
            if any(_is_within(parent, other) for other in targets if other != target):
                continue
            parents.add(parent)
    args: list[str] = []
    for parent in sorted(parents, key=lambda p: len(p.parts)):
        args += ["--perms", "0111", "--dir", str(parent)]
    return args


def _open_dir_args(targets: Sequence[Path], listable: Sequence[Path]) -> list[str]:
    """Create the directories the sandboxed (unprivileged) process must list or enter as 0755.

    bubblewrap started by root creates the parents of bind targets with mode 0700, which a
    sandbox running under another uid could not enter (``/etc``, ``/opt``, the parents of this
    package).
    """
    wanted = {Path("/etc"), Path("/opt"), SANDBOX_LIB_DIR}
    for path in listable:
        wanted.update(path.parents)
    skip = {Path("/"), Path("/tmp"), *targets}
    args: list[str] = []
    for path in sorted(wanted - skip, key=lambda p: len(p.parts)):
        if path == Path("/etc") or not _covered(path, _SYSTEM_MOUNTS):
            args += ["--perms", "0755", "--dir", str(path)]
    return args


def sandbox_uid() -> int | None:
    """A fresh unprivileged uid for one sandbox if the grader runs as root, else ``None``.

    Without root there is nothing to drop: the sandbox runs as the grader's uid, to which
    ``RLIMIT_NPROC`` applies.
    """
    if os.geteuid() != 0:
        return None
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)


def hand_over(path: os.PathLike[str] | str, uid: int) -> None:
    """Give ``path`` (and everything below a directory) to ``uid``/``uid``; links are not followed.

    A directory stays enterable by root without capabilities (bubblewrap changes into the work
    directory after dropping them), so it gets at least mode 0711.
    """
    top = Path(path)
    os.lchown(top, uid, uid)
    if top.is_dir() and not top.is_symlink():
        os.chmod(top, (top.stat().st_mode & 0o7777) | 0o711)
        for root, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, uid)


def sandbox_env(
    workdir: Path,
    environ: Mapping[str, str] | None = None,
    *,
    tmp: Path = Path("/tmp"),
    lib_dir: Path = SANDBOX_LIB_DIR,
) -> dict[str, str]:
    """Environment of a process that runs student code: a small allowlist plus fixed values.

    The one builder for the kernel and the sealed worker, sandboxed or not, so they see the same
    policy: ``TMPDIR`` is ``tmp`` (private to that process tree: the sandbox's own ``/tmp``, or a
    fresh temporary directory when there is no sandbox), ``HOME`` is ``tmp/home`` (never the
    working directory, which holds the submission's files), and ``grading`` is importable from
    ``lib_dir``.
    """
    source = os.environ if environ is None else environ
    env = {key: source[key] for key in _ENV_PASSTHROUGH if key in source}
    home = tmp / "home"
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "IPYTHONDIR": str(home / ".ipython"),
            "MPLCONFIGDIR": str(home / ".matplotlib"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "PYTHONPATH": str(lib_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SANDBOX_WORKDIR": str(workdir),
        }
    )
    env.setdefault("MPLBACKEND", "Agg")
    return env


def limit_args(
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    nproc: int = DEFAULT_NPROC,
    fsize_bytes: int = DEFAULT_FSIZE_BYTES,
) -> list[str]:
    """``prlimit`` command prefix setting address space, process and file size limits.

    ``--nproc`` is not enforced for processes whose real uid is 0 (the kernel
    exempts root); the sandbox's PID namespace still kills every process it
    contains when the sandbox ends.
    """
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    return [
        prlimit,
        f"--as={memory_bytes}",
        f"--nproc={nproc}",
        f"--fsize={fsize_bytes}",
        "--core=0",
        "--",
    ]


_AUTO_UID = -1


def sandbox_prefix(
    workdir: os.PathLike[str] | str,
    *,
    extra_ro: Iterable[os.PathLike[str] | str] = (),
    extra_rw: Iterable[os.PathLike[str] | str] = (),
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    nproc: int = DEFAULT_NPROC,
    fsize_bytes: int = DEFAULT_FSIZE_BYTES,
    tmp_bytes: int = DEFAULT_TMP_BYTES,
    environ: Mapping[str, str] | None = None,
    uid: int | None = _AUTO_UID,
) -> list[str]:
    """Command prefix that runs a command in the sandbox with ``workdir`` writable.

    Append the command to run (``[python, "-m", ...]``); paths in it must be
    visible inside (the Python installation, this package, ``workdir`` and
    ``extra_ro`` are; files in ``extra_ro`` must be readable by ``uid``).
    The directories in ``extra_rw`` are bound writable at the same paths (the
    kernel's socket directory; they must be usable by ``uid``).  The sandbox
    has a network namespace of its own with nothing but loopback.

    ``uid`` is the unprivileged uid the command runs as when the grader is
    root (default: a fresh one from :func:`sandbox_uid`; ``None``: stay
    root, as bubblewrap's user namespace maps it, which exempts the sandbox
    from ``RLIMIT_NPROC``).  ``workdir`` is handed over to that uid.
    """
    work = Path(workdir).resolve()
    if not work.is_dir():
        raise FileNotFoundError(f"sandbox work directory does not exist: {work}")
    run_as = sandbox_uid() if uid == _AUTO_UID else uid
    if run_as is not None and os.geteuid() != 0:
        run_as = None  # only root can switch; other graders are not exempt from RLIMIT_NPROC anyway
    ro_paths: list[Path] = []
    for raw in [*python_roots(), grading_package_dir(), *extra_ro]:
        path = Path(raw).resolve()
        if path not in ro_paths and not _covered(path, [Path("/usr")]):
            ro_paths.append(path)
    rw_paths = [Path(raw).resolve() for raw in extra_rw]
    args = [shutil.which("bwrap") or "bwrap"]
    if run_as is None:
        args += ["--unshare-all"]
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    else:
        # No user namespace (it would map the sandbox to root): bubblewrap runs privileged,
        # keeps only what setpriv needs to switch to ``run_as``, and setpriv drops even that.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net"]
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        hand_over(work, run_as)
    args += ["--hostname", "sandbox"]
    # The private /tmp first: directories created below for paths under /tmp (a course or venv
    # cloned there) must be created inside it, or the tmpfs would hide them.
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp", "--perms", "0777", "--dir", "/tmp/home"]
    targets = [*ro_paths, *rw_paths, work]
    args += _open_dir_args(targets, listable=[grading_package_dir()])
    args += _system_args()
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += _hidden_parent_args(targets, listable=[grading_package_dir()])
    for path in sorted(ro_paths, key=lambda p: len(p.parts)):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind", str(grading_package_dir()), str(SANDBOX_LIB_DIR / "grading")]
    for path in rw_paths:
        args += ["--bind", str(path), str(path)]
    args += ["--bind", str(work), str(work), "--chdir", str(work)]
    args += ["--remount-ro", "/"]  # the sandbox's own root tmpfs; /tmp and workdir stay writable
    args += ["--clearenv"]
    for key, value in sorted(sandbox_env(work, environ).items()):
        args += ["--setenv", key, value]
    args += ["--"]
    if run_as is not None:
        args += setpriv_args(run_as)
    return args + limit_args(memory_bytes, nproc, fsize_bytes)


def setpriv_args(uid: int) -> list[str]:
    """``setpriv`` command prefix switching to ``uid``/``uid`` with no capabilities left at all."""
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


@functools.lru_cache(maxsize=1)
def bwrap_available() -> bool:
    """True if bubblewrap is installed and can create the sandbox on this machine."""
    if shutil.which("bwrap") is None or shutil.which("prlimit") is None:
        return False
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return False  # root must drop to an unprivileged uid (RLIMIT_NPROC does not apply to root)
    try:
        with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as probe:
            result = subprocess.run(
                [*sandbox_prefix(probe), sys.executable, "-c", "import grading"],
                capture_output=True,
                timeout=30,
            )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def kernelspec_dict(
    *,
    python: str = sys.executable,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    workdir: os.PathLike[str] | str | None = None,
) -> dict[str, object]:
    """Contents of ``kernel.json`` for the sealed kernel."""
    argv = [python, str(Path(__file__).resolve()), "kernel", "--memory-bytes", str(memory_bytes)]
    if workdir is not None:
        argv += ["--workdir", str(Path(workdir).resolve())]
    argv += ["{connection_file}"]
    return {
        "argv": argv,
        "display_name": "Python 3 (sealed)",
        "language": "python",
        # bwrap --new-session puts the kernel in its own session, so a SIGINT
        # sent to the launcher's process group would never reach it.
        "interrupt_mode": "message",
        # The kernel has no network: its client reaches it over ipc sockets in a
        # directory the provisioner makes for it.
        "metadata": {"debugger": False, "kernel_provisioner": {"provisioner_name": KERNEL_PROVISIONER}},
    }


def write_sealed_kernelspec(
    dest_dir: os.PathLike[str] | str,
    workdir: os.PathLike[str] | str | None = None,
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    python: str = sys.executable,
) -> Path:
    """Write the ``python3-sealed`` kernelspec under ``dest_dir/kernels/``.

    Put ``dest_dir`` on ``JUPYTER_PATH`` to make the kernel available (to a
    Python environment where this package is installed: the kernelspec names
    its kernel provisioner).  Without ``workdir`` the kernel's writable
    directory is the directory it is started in (nbclient starts it in the
    notebook's directory).  Returns the kernel directory.
    """
    kernel_dir = Path(dest_dir) / "kernels" / SEALED_KERNEL_NAME
    kernel_dir.mkdir(parents=True, exist_ok=True)
    spec = kernelspec_dict(python=python, memory_bytes=memory_bytes, workdir=workdir)
    (kernel_dir / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
    return kernel_dir


class KernelLaunchError(Exception):
    """The sealed kernel cannot be started safely with this connection file."""


@dataclass(frozen=True)
class KernelSockets:
    """Layout of one sealed kernel's socket directory ``top`` (made by :mod:`grading.kernel_provisioner`).

    ``top``, ``grader/`` and ``kernel/`` are the grader's, mode 0700 (``kernel/``
    is handed to the sandbox uid when the grader is root).  The kernel binds
    its sockets ``kernel/kernel-N``; ``kernel/`` is the only one bound into the
    sandbox, with the kernel's connection file ``kernel.json`` (read-only).
    The grader connects through hard links to those sockets in ``grader/``,
    which the kernel can neither see nor change.
    """

    top: Path

    @property
    def kernel(self) -> Path:
        return self.top / "kernel"

    @property
    def grader(self) -> Path:
        return self.top / "grader"

    @property
    def connection_file(self) -> Path:
        """The kernel's connection file: the grader's, with ``ip`` naming ``kernel/``."""
        return self.top / "kernel.json"

    @property
    def grader_prefix(self) -> str:
        """``ip`` of the grader's connection file (ZeroMQ appends ``-N``)."""
        return str(self.grader / KERNEL_SOCKET_PREFIX)

    @property
    def kernel_prefix(self) -> str:
        """``ip`` of the kernel's connection file."""
        return str(self.kernel / KERNEL_SOCKET_PREFIX)

    @classmethod
    def of_prefix(cls, prefix: str) -> KernelSockets:
        """The layout whose :attr:`grader_prefix` is ``prefix``; :class:`KernelLaunchError` if none is."""
        path = Path(prefix)
        sockets = cls(path.parent.parent)
        if not path.is_absolute() or prefix != sockets.grader_prefix:
            raise KernelLaunchError(f"the ipc socket prefix {prefix!r} is not <directory>/grader/"
                                    f"{KERNEL_SOCKET_PREFIX} with an absolute directory")
        return sockets


def _check_private_dir(directory: Path) -> None:
    """Raise :class:`KernelLaunchError` unless ``directory`` is a real directory of this uid with mode 0700."""
    try:
        status = os.lstat(directory)
    except OSError as exc:
        raise KernelLaunchError(f"the kernel's socket directory {directory} is unusable: {exc}") from exc
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid() or status.st_mode & 0o077:
        raise KernelLaunchError(f"{directory} must be a directory of this user with mode 0700")


def kernel_sockets(connection_file: Path) -> tuple[KernelSockets, dict[str, object]]:
    """The socket directory named by the grader's ``ipc`` connection file, and the file's contents.

    The kernel has no network, so the connection file must use the ``ipc``
    transport with the layout of :class:`KernelSockets`, every directory
    private (mode 0700, this uid's) and ``kernel/`` holding nothing but
    sockets: a directory :mod:`grading.kernel_provisioner` made for this
    kernel, never a shared one such as the course root.  Raises
    :class:`KernelLaunchError` otherwise.
    """
    try:
        info = json.loads(connection_file.read_text())
    except (OSError, ValueError) as exc:
        raise KernelLaunchError(f"cannot read the connection file {connection_file}: {exc}") from exc
    if not isinstance(info, dict) or info.get("transport") != "ipc" or not isinstance(info.get("ip"), str):
        raise KernelLaunchError(
            f"the sealed kernel has no network and needs the ipc transport, but {connection_file} does not "
            f"use it: start it through its kernelspec, whose kernel provisioner ({KERNEL_PROVISIONER}, "
            "installed with the grading package) sets the transport"
        )
    sockets = KernelSockets.of_prefix(info["ip"])
    for directory in (sockets.top, sockets.grader, sockets.kernel):
        _check_private_dir(directory)
    if any(not stat.S_ISSOCK(os.lstat(entry).st_mode) for entry in sockets.kernel.iterdir()):
        raise KernelLaunchError(f"the kernel's socket directory {sockets.kernel} must hold nothing but sockets")
    return sockets, info


def write_kernel_connection_file(sockets: KernelSockets, info: Mapping[str, object]) -> Path:
    """Write the kernel's connection file (``info`` with ``ip`` naming ``kernel/``), mode 0600."""
    path = sockets.connection_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({**info, "ip": sockets.kernel_prefix}, out)
    return path


def kernel_command(
    connection_file: Path,
    workdir: Path,
    kernel_args: Sequence[str],
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    nproc: int = DEFAULT_NPROC,
    python: str = sys.executable,
) -> list[str]:
    """Full command running ipykernel in the sandbox.

    The kernel has no network.  It gets its own connection file (read-only)
    naming the ``kernel/`` socket directory of the grader's ipc connection
    file (:func:`kernel_sockets`), which is bound writable.  When the grader is
    root both are handed to the kernel's unprivileged uid (the directory stays
    0700).
    """
    sockets, info = kernel_sockets(connection_file)
    kernel_file = write_kernel_connection_file(sockets, info)
    uid = sandbox_uid()
    if uid is not None:
        for path in (kernel_file, sockets.kernel):
            os.chown(path, uid, uid)
    prefix = sandbox_prefix(
        workdir, extra_ro=[kernel_file], extra_rw=[sockets.kernel], memory_bytes=memory_bytes, nproc=nproc,
        uid=uid,
    )
    return [*prefix, python, "-m", "ipykernel_launcher", "-f", str(kernel_file), *kernel_args]


#: Options the kernel's launcher takes from the end of its command line (where nbclient appends
#: ``Execute.extra_arguments``), so the kernel's limits can be set from ``nbgrader_config.py``
#: (``TolerantExecute.memory_bytes`` and ``.nproc``) without rewriting the kernelspec.
KERNEL_LIMIT_OPTIONS = {"--sandbox-memory-bytes": "memory_bytes", "--sandbox-nproc": "nproc"}


def kernel_limit_arguments(*, memory_bytes: int | None = None, nproc: int | None = None) -> list[str]:
    """Extra kernel arguments that set the sandboxed kernel's limits (see :data:`KERNEL_LIMIT_OPTIONS`)."""
    values = {"memory_bytes": memory_bytes, "nproc": nproc}
    return [f"{flag}={values[name]}" for flag, name in KERNEL_LIMIT_OPTIONS.items() if values[name] is not None]


def _parse_kernel_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="grading.sandbox", description="Sandboxed ipykernel launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    kernel = sub.add_parser("kernel", help="run ipykernel in the sandbox")
    kernel.add_argument("--memory-bytes", type=int, default=DEFAULT_MEMORY_BYTES)
    kernel.add_argument("--workdir", type=Path, default=None)
    kernel.add_argument("connection_file", type=Path)
    kernel.add_argument("kernel_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.nproc = DEFAULT_NPROC
    passed_on = []
    for arg in args.kernel_args:
        flag, sep, value = arg.partition("=")
        if sep and flag in KERNEL_LIMIT_OPTIONS:
            setattr(args, KERNEL_LIMIT_OPTIONS[flag], int(value))
        else:
            passed_on.append(arg)
    args.kernel_args = passed_on
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the kernel launcher: replaces itself with the sandboxed kernel."""
    # bwrap's --die-with-parent ends the sandbox with bwrap, not bwrap with the process that
    # started the kernel: without this, a kernel outlives an nbgrader that exits or is killed
    # without shutting it down (a restarted kernel, a SIGKILL). The request survives the exec.
    if str(grading_package_dir().parent) not in sys.path:
        sys.path.insert(0, str(grading_package_dir().parent))  # run as a script: grading/ is sys.path[0]
    from grading.pdeathsig import die_with_parent

    die_with_parent(os.getppid())
    args = _parse_kernel_args(sys.argv[1:] if argv is None else argv)
    if not bwrap_available():
        print("grading.sandbox: bubblewrap is not usable here; refusing to run unsandboxed", file=sys.stderr)
        return 1
    workdir = (args.workdir or Path.cwd()).resolve()
    try:
        command = kernel_command(
            args.connection_file.resolve(), workdir, args.kernel_args, memory_bytes=args.memory_bytes,
            nproc=args.nproc,
        )
    except KernelLaunchError as exc:
        print(f"grading.sandbox: {exc}", file=sys.stderr)
        return 1
    # The kernel's own stdout (ipykernel's banner, os.write(1, ...) from student
    # code) would land in the grader's terminal; cell output goes over ZeroMQ.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
