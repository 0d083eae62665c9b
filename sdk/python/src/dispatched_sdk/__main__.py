"""``python -m dispatched_sdk`` runs the ``dispatched`` CLI."""

import sys

from .cli import main

sys.exit(main())
