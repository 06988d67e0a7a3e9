"""A griffe extension for the API pages (mkdocs.yml): fxvae's docstrings, written for ``help()`` and doctest,
rendered as Markdown.

Two rewrites, on the docstring text only: runs of doctest lines (``>>>``, ``...`` and the expected output
below them) become fenced ``pycon`` blocks, which Markdown would otherwise read as nested quotes; and
reStructuredText roles (``:func:`fxvae.convert```) become code spans.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc):`~?([^`]+)`")


def markdown_docstring(text: str) -> str:
    """The docstring ``text`` with doctests fenced and roles turned into code spans (tests/test_docs_site.py)."""
    out: list[str] = []
    in_doctest = False
    indent = ""
    for line in ROLE.sub(r"`\1`", text).splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>") and not in_doctest:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_doctest = True
        elif in_doctest and not stripped:
            out.append(f"{indent}```")
            in_doctest = False
        out.append(line)
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
