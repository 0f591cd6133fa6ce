"""``python -m tito`` runs the command line."""

import sys

from tito.cli import main

sys.exit(main())
