"""``python -m felix_bench``."""

from __future__ import annotations

import sys

from felix_bench import main

sys.exit(main())
