"""Text that came from spans, shown as text: on terminals, in pipes, in CSV files.

Customer ids, model names and the like are chosen by whoever sends spans. Printed through rich,
``[/]`` would be markup (an error exit), ``[link=...]`` a clickable hyperlink, and escape
sequences (``\\x1b[2J``, ``\\x1b]0;...``) would reach the terminal. ``cell`` makes a rich ``Text``
(never parsed as markup) with every character that is not printable (controls, bidirectional
overrides, zero-width and other format characters, line separators, lone surrogates) written as
its Python escape, so it is visible and inert. ``csv_text`` neutralises spreadsheet formulas.
"""

from __future__ import annotations

from rich.text import Text

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""OWASP's CSV injection list: a cell starting with one of these is read as a formula."""


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every non-printable character (``str.isprintable``, space kept) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def cell(value: object) -> Text:
    """A table cell or line for rich: plain text, no markup, nothing a terminal acts on."""
    return Text(visible(str(value)))


def csv_text(value: str) -> str:
    """OWASP's rule for CSV injection: a cell starting with ``= + - @``, tab or carriage return
    is prefixed with a single quote, so spreadsheets show it as text (the csv module quotes what
    needs quoting, so a cell cannot end early); then non-printable characters are escaped as in
    ``visible``, since a CSV report is also read on terminals (JSON is the exact format). Only
    text from spans goes through this: numbers and amounts are written as they are, a negative
    margin included."""
    return visible("'" + value if value.startswith(FORMULA_PREFIXES) else value)
