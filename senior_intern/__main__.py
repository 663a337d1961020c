"""``python -m senior_intern`` opens the desktop app."""

import sys

from senior_intern.gui.app import main

sys.exit(main())
