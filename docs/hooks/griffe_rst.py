"""Griffe extension for the Python API reference: the reStructuredText bits of lambdanet's
docstrings (``:class:`X``` roles, ``Usage::`` literal-block markers) as Markdown.

lambdanet's docstrings are plain prose with double-backquoted code, which Markdown renders as
code already; Sphinx roles would show as written (``:class:``), and a paragraph ending in ``::``
would keep both colons. Named in ``mkdocs.yml`` under the Python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const):`~?\.?([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::$", re.MULTILINE)


def to_markdown(text: str) -> str:
    """``:class:`Driver``` -> ```Driver```; ``Usage::`` -> ``Usage:`` (its indented block stays a
    code block)."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _LITERAL_MARKER.sub(r"\1:", text)


class ReSTRoles(Extension):
    """Rewrite every docstring once the object tree is built."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
