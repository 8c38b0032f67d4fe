"""``python -m felix.bench``."""

from __future__ import annotations

import sys

from felix.bench import main

sys.exit(main())
