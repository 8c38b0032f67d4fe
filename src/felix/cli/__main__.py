"""``python -m felix.cli``: the ``felix`` command."""

from __future__ import annotations

import sys

from felix.cli import main

sys.exit(main())
