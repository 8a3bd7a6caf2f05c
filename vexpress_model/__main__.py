"""``python -m vexpress_model``: see :mod:`vexpress_model.cli`."""

import sys

from .cli import main

sys.exit(main())
