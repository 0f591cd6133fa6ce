"""Write two demonstration submissions built from the current release.

`demo-complete` hands in the reference solution; `demo-partial` completed Part 1 (Embedding) and
Part 4 (memory) only. Usage: python scripts/demo_submissions.py OUT_DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import ASSIGNMENT, NOTEBOOK  # noqa: E402
from support.submissions import Submission, reference_answers, write_submission  # noqa: E402


def main(out: Path) -> None:
    answers = reference_answers()
    demos = [
        Submission("demo-complete"),
        Submission("demo-partial", base="blank",
                   answers={k: answers[k] for k in ("embedding_class", "memory")}),
    ]
    for demo in demos:
        path = write_submission(demo.notebook(), out / demo.name / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
