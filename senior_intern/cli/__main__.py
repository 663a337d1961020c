"""``python -m senior_intern.cli``: the command line."""

import sys

from senior_intern.cli import main

sys.exit(main())
