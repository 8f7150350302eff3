"""griffe extension: read the Hugging Face docstring style as Google style, so the API reference renders it cleanly.

HF docstrings describe an argument (or attribute) as ``name (`type`, *optional*, defaults to `x`): text`` and sometimes several
arguments on one line (``mean (...), std (...): text``). griffe's Google parser would show the parenthesis verbatim
(backticks and all) as the type. This extension drops the parenthesis, so the type and the default come from the
signature, shows HF's ``[`Name`]`` cross-references as code, and gives each of several names on one line its own entry with the shared text. The package's
docstrings stay in the HF style; only the site's copy is rewritten.
"""

from __future__ import annotations

import re

import griffe


SECTIONS = ("Args:", "Arguments:", "Parameters:", "Attributes:")
# `name (anything without a colon-newline):` with one or more names; the parenthesis may nest one level.
_PAREN = r"\((?:[^()]|\([^()]*\))*\)"
_ENTRY = re.compile(rf"^(?P<names>\**\w+(?: {_PAREN})?(?:, \**\w+(?: {_PAREN})?)*):(?P<rest>.*)$")
_NAME = re.compile(rf"(\**\w+)(?: {_PAREN})?")
# HF's cross-reference to an object, [`AdvTrainer`] or [`~hf_advft.PixelSpace`]: shown as code (no link target).
_XREF = re.compile(r"\[`~?(?:[\w.]*\.)?(\w+)`\](?![\[(])")


def rewrite(text: str) -> str:
    """Rewrite the argument entries of HF-style `Args:` sections as plain Google-style entries."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() not in SECTIONS:
            continue
        section_indent = len(line) - len(line.lstrip())
        entry_indent = None
        while i < len(lines):
            current = lines[i]
            indent = len(current) - len(current.lstrip())
            if current.strip() and indent <= section_indent:
                break
            if entry_indent is None and current.strip():
                entry_indent = indent
            match = _ENTRY.match(current.strip()) if current.strip() and indent == entry_indent else None
            if not match:
                out.append(current)
                i += 1
                continue
            # The entry's continuation lines: everything indented deeper than the entry.
            body = [match.group("rest").strip()]
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > entry_indent):
                if not lines[i].strip() and (i + 1 >= len(lines) or
                                             len(lines[i + 1]) - len(lines[i + 1].lstrip()) <= entry_indent):
                    break
                body.append(lines[i])
                i += 1
            pad = " " * entry_indent
            for name in _NAME.findall(match.group("names")):
                out.append(f"{pad}{name}: {body[0]}".rstrip())
                out.extend(body[1:])
    return _XREF.sub(r"`\1`", "\n".join(out))


class HFDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded objects before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = rewrite(obj.docstring.value)
