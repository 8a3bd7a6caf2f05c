"""``python -m vexpress_model``: see :mod:`vexpress_model.cli`."""

import sys

from vexpress_model.cli import main

sys.exit(main())
