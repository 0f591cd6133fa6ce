"""Write two demonstration submissions built from the current release.

`demo-complete` hands in the reference solution; `demo-partial` completed Part 1 (Embedding) and
Part 4 (memory) only. Usage, from the repository root: python -m scripts.demo_submissions OUT_DIR
"""

import sys
from pathlib import Path

import nbformat

from bench.reference import ASSIGNMENT, NOTEBOOK, reference_submission

DEMOS = {"demo-complete": None, "demo-partial": ("embedding_class", "memory")}  # name -> answers filled


def main(out: Path) -> None:
    for name, only in DEMOS.items():
        path = out / name / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(reference_submission(only=only), str(path))
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
