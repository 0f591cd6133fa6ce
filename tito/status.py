"""What ``tito`` remembers per workspace (``.tito/status.json``) and the ``tito module status`` table."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

STATE_DIR = ".tito"
STATUS_FILE = "status.json"


class Outcome(str, Enum):
    """How the last ``tito module complete`` ended."""

    PASSED = "passed"            # every visible check passed
    FAILED = "failed"            # some visible check failed
    KERNEL_DIED = "kernel died"  # the run stopped: no Part results


@dataclass(frozen=True)
class PartResult:
    """The visible checks of one Part in one run."""

    number: int
    title: str
    passed: int
    total: int
    points: float                                    # every point of the Part (autograded and by hand)
    failed: list[str] = field(default_factory=list)  # grade_ids of the checks that failed


@dataclass
class ModuleRecord:
    """The workspace's memory of one module."""

    module: str
    completed_at: str | None = None   # ISO 8601, UTC
    outcome: str | None = None        # an Outcome value
    parts: list[PartResult] = field(default_factory=list)
    exported: str | None = None       # path of the exported module, relative to the workspace
    submitted_at: str | None = None   # nbgrader's submission timestamp


def now_utc() -> str:
    """The current time as ISO 8601 UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def status_path(workspace: Path) -> Path:
    return workspace / STATE_DIR / STATUS_FILE


def load_status(workspace: Path) -> dict[str, ModuleRecord]:
    """Every module's record (empty for a new workspace or an unreadable file)."""
    path = status_path(workspace)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    records: dict[str, ModuleRecord] = {}
    for name, item in (raw.get("modules") or {}).items() if isinstance(raw, dict) else ():
        try:
            parts = [PartResult(**p) for p in item.get("parts", [])]
            records[name] = ModuleRecord(**{**item, "parts": parts})
        except TypeError:
            continue  # a record of another version: forget it
    return records


def save_status(workspace: Path, records: dict[str, ModuleRecord]) -> None:
    """Write every record atomically."""
    path = status_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"modules": {name: asdict(r) for name, r in sorted(records.items())}}, indent=2) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def update_record(workspace: Path, module: str, **changes: object) -> ModuleRecord:
    """Change some fields of one module's record and save."""
    records = load_status(workspace)
    record = records.setdefault(module, ModuleRecord(module))
    for key, value in changes.items():
        setattr(record, key, value)
    save_status(workspace, records)
    return record


def describe_parts(parts: list[PartResult]) -> str:
    """``Parts 1, 2, 4 pass; 3 fails`` (Parts without autograded checks are left out)."""
    checked = [p for p in parts if p.total]
    passing = [str(p.number) for p in checked if p.passed == p.total]
    failing = [str(p.number) for p in checked if p.passed < p.total]
    words = []
    if passing:
        words.append(f"Part{'s' if len(passing) > 1 else ''} {', '.join(passing)} pass{'' if len(passing) > 1 else 'es'}")
    if failing:
        words.append(f"Part{'s' if len(failing) > 1 else ''} {', '.join(failing)} fail{'' if len(failing) > 1 else 's'}")
    return "; ".join(words) or "no autograded checks"


def format_status(module_names: list[str], records: dict[str, ModuleRecord],
                  submitted: dict[str, str | None] | None = None) -> str:
    """One line per module: Parts passing at the last complete, when it ran, whether submitted."""
    lines = []
    for name in module_names:
        record = records.get(name, ModuleRecord(name))
        if record.completed_at is None:
            ran = "never completed"
        elif record.outcome == Outcome.KERNEL_DIED.value:
            ran = f"last complete {record.completed_at}: the kernel died"
        else:
            ran = f"last complete {record.completed_at}: {describe_parts(record.parts)}"
        when = (submitted or {}).get(name) or record.submitted_at
        sub = f"submitted {when}" if when else "not submitted"
        lines.append(f"{name}: {ran}; {sub}")
    return "\n".join(lines)
