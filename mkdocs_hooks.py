"""MkDocs hooks: render the Sphinx roles of Felix's docstrings as plain code.

The docstrings follow Trio's style (``:class:`Gap```, ``:meth:`run```), which
mkdocstrings renders literally; this drops the role and keeps the code span.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):(<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """Drop ``:role:`` prefixes before code spans in every page's HTML."""
    return _ROLE.sub(r"\1", html)
