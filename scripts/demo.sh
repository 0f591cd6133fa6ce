#!/usr/bin/env bash
# Install everything, generate the student release and grade two demonstration submissions
# through the sealed pipeline; print where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"   # nbgrader shells out to alembic

nbgrader generate_assignment 12_embeddings --force
rm -rf build/demo-submissions
python -m scripts.demo_submissions build/demo-submissions
python -m grading.grade --course . --assignment 12_embeddings \
  build/demo-submissions/demo-complete build/demo-submissions/demo-partial \
  --feedback --export build/grades.csv

cat <<MSG

Student release:    release/12_embeddings/embeddings.ipynb
Graded notebooks:   autograded/<student>/12_embeddings/
Feedback (HTML):    feedback/<student>/12_embeddings/embeddings.html
Grades (CSV):       build/grades.csv
MSG
