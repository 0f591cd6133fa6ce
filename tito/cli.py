"""The ``tito`` command line: ``tito module view | complete | status | submit``.

Exit status: 0 on success, 1 when a visible check fails (``complete``), 2 for a state the student
must fix (unknown module, no working copy, a notebook that is not JSON, a dead kernel, no exchange
to submit to).
"""

from __future__ import annotations

import argparse
import logging
import sys
import webbrowser
from pathlib import Path
from typing import Sequence

from tito import exchange as exch
from tito import lab
from tito.complete import DEFAULT_TIMEOUT, KernelDied, format_report, read_notebook, run_checks
from tito.errors import TitoError
from tito.export import export_notebook
from tito.modules import Course, Module, discover_modules, find_course, resolve_module
from tito.status import Outcome, format_status, load_status, now_utc, update_record
from tito.workspace import Origin, ensure_working_copy, working_copy_path, workspace_dir

EXIT_CHECKS_FAILED = 1
EXIT_BAD_STATE = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course", metavar="DIR", help="the course checkout (default: the one tito is installed from)")
    common.add_argument("--workspace", metavar="DIR", help="your workspace (default: the current directory)")
    parser = argparse.ArgumentParser(prog="tito", description="Work on the course's modules.")
    groups = parser.add_subparsers(dest="group", required=True)
    module = groups.add_parser("module", help="view, complete, check and submit a module")
    commands = module.add_subparsers(dest="command", required=True)

    view = commands.add_parser("view", parents=[common], help="create your working copy if missing and open it in JupyterLab")
    view.add_argument("module", help="12, 12_embeddings or embeddings")
    view.add_argument("--no-browser", action="store_true", help="start (or reuse) JupyterLab but print the path and URL instead of opening a browser")
    view.add_argument("--no-lab", action="store_true", help="only create the working copy and print its path")

    complete = commands.add_parser("complete", parents=[common], help="run your working copy with the visible checks; export it when they pass")
    complete.add_argument("module")
    complete.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per cell (default: %(default)g)")
    complete.add_argument("--no-sandbox", action="store_true", help="run the kernel without bubblewrap")

    commands.add_parser("status", parents=[common], help="per module: Parts passing, last complete, submitted")

    submit = commands.add_parser("submit", parents=[common], help="complete, then nbgrader submit to the exchange")
    submit.add_argument("module")
    submit.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per cell (default: %(default)g)")
    submit.add_argument("--no-sandbox", action="store_true", help="run the kernel without bubblewrap")

    stop = commands.add_parser("stop-lab", parents=[common], help="stop the workspace's JupyterLab server")
    del stop
    return parser.parse_args(argv)


def _context(args: argparse.Namespace) -> tuple[Course, list[Module], Path]:
    course = find_course(args.course)
    return course, discover_modules(course), workspace_dir(args.workspace)


def cmd_view(args: argparse.Namespace) -> int:
    course, modules, workspace = _context(args)
    module = resolve_module(args.module, modules)
    path, origin = ensure_working_copy(workspace, course, module, exch.student_exchange(workspace))
    said = {Origin.EXISTING: "your working copy (left as it is)",
            Origin.FETCHED: "fetched from the exchange",
            Origin.COPIED: f"copied from {course.release_dir / module.name}"}[origin]
    print(f"{path}: {said}")
    if args.no_lab:
        return 0
    server, reused = lab.ensure_server(workspace)
    url = server.url(path.relative_to(workspace))
    print(f"JupyterLab {'already running' if reused else 'started'} (pid {server.pid}): {url}")
    if not args.no_browser:
        webbrowser.open(url)
    return 0


def run_complete(args: argparse.Namespace, course: Course, module: Module, workspace: Path) -> int:
    """Run the checks, print the report, record it, export on success; the exit status."""
    path = working_copy_path(workspace, module)
    print(f"Running {path} top to bottom in a fresh kernel ...", flush=True)
    try:
        report = run_checks(path, course.release_notebook(module), timeout=args.timeout,
                            sandboxed=False if args.no_sandbox else None)
    except KernelDied:
        update_record(workspace, module.name, completed_at=now_utc(), outcome=Outcome.KERNEL_DIED.value, parts=[])
        raise
    print(format_report(report))
    exported = None
    if report.passed:
        command = f"tito module complete {module.name}"
        target = export_notebook(read_notebook(path), workspace, module.working_copy.as_posix(), command)
        if target is not None:
            exported = str(target.relative_to(workspace))
            print(f"Exported your code to {target} (import it as "
                  f"{'.'.join(target.relative_to(workspace).with_suffix('').parts)})")
    else:
        print("Not exported: fix the failing checks and run complete again.")
    previous = load_status(workspace).get(module.name)
    update_record(workspace, module.name, completed_at=now_utc(),
                  outcome=(Outcome.PASSED if report.passed else Outcome.FAILED).value, parts=report.parts,
                  exported=exported or (previous.exported if previous else None))
    return 0 if report.passed else EXIT_CHECKS_FAILED


def cmd_complete(args: argparse.Namespace) -> int:
    course, modules, workspace = _context(args)
    return run_complete(args, course, resolve_module(args.module, modules), workspace)


def cmd_status(args: argparse.Namespace) -> int:
    _, modules, workspace = _context(args)
    exchange = exch.student_exchange(workspace)
    submitted = {m.name: exch.latest_submission(exchange, m.name) for m in modules} if exchange else {}
    print(format_status([m.name for m in modules], load_status(workspace), submitted))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    course, modules, workspace = _context(args)
    module = resolve_module(args.module, modules)
    exchange = exch.require_exchange(exch.student_exchange(workspace), module)
    try:
        status = run_complete(args, course, module, workspace)
    except KernelDied as exc:
        print(f"warning: {exc}; submitting anyway", file=sys.stderr)
        status = EXIT_CHECKS_FAILED
    if status != 0:
        print("warning: some visible checks fail; submitting anyway (you can submit again later; "
              "the last submission counts)", file=sys.stderr)
    receipt = exch.submit(workspace, module, exchange)
    update_record(workspace, module.name, submitted_at=receipt.timestamp)
    print(f"Submitted {', '.join(receipt.files)} to {receipt.course_id} at {receipt.timestamp}")
    return 0


def cmd_stop_lab(args: argparse.Namespace) -> int:
    server = lab.stop_server(workspace_dir(args.workspace))
    print(f"stopped JupyterLab (pid {server.pid})" if server else "no JupyterLab running for this workspace")
    return 0


COMMANDS = {"view": cmd_view, "complete": cmd_complete, "status": cmd_status, "submit": cmd_submit,
            "stop-lab": cmd_stop_lab}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tito`` console script."""
    logging.basicConfig(level=logging.ERROR, format="tito: %(message)s")  # Jupyter's shutdown chatter stays quiet
    logging.getLogger("tito").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TitoError as exc:
        print(f"tito: error: {exc}", file=sys.stderr)
        return EXIT_BAD_STATE


if __name__ == "__main__":
    sys.exit(main())
