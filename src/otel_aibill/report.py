"""The usage report as people and programs read it: table, JSON or CSV from ledger summaries.

Kept apart from the command line so the demo and the ``usage`` command print the same table
without importing each other.
"""

from __future__ import annotations

import csv
import io
import json
import os
from decimal import Decimal
from typing import Any, Literal

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from otel_aibill.display import cell, csv_text
from otel_aibill.ledger.base import UsageSummary

ReportFormat = Literal["table", "json", "csv"]
FORMATS: tuple[ReportFormat, ...] = ("table", "json", "csv")


def decimal_text(value: Decimal) -> str:
    """Positional notation, full precision: ``str`` would write small amounts as ``1.5E-7``."""
    return format(value, "f")


def summary_dicts(rows: list[UsageSummary], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """The documented JSON shape: decimal strings for money, every grouping key present."""
    out = []
    for row in rows:
        item: dict[str, Any] = {k: row.key.get(k, "*") for k in ("customer", "provider", "model")}
        item.update({k: row.key[k] for k in by if k not in item})
        item.update(
            spans=row.spans,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
            reasoning_tokens=row.reasoning_tokens,
            cost=decimal_text(row.cost),
            billed=decimal_text(row.billed),
            margin=decimal_text(row.billed - row.cost),
            currency=row.currency,
            unpriced_spans=row.unpriced_spans,
            pending_spans=row.pending_spans,
        )
        out.append(item)
    return out


def usage_json(items: list[dict[str, Any]]) -> str:
    """Exact: every text as it is stored (control characters as JSON escapes)."""
    return json.dumps(items, indent=2)


def usage_csv(items: list[dict[str, Any]]) -> str:
    """One header line from the first item's keys (they are the same for every item); empty
    when there is nothing to report. Text cells (ids and names from spans) that a spreadsheet
    would run as a formula are neutralised, control characters escaped (``display.csv_text``);
    numbers are written as is."""
    buf = io.StringIO()
    if items:
        writer = csv.DictWriter(buf, fieldnames=list(items[0]))
        writer.writeheader()
        writer.writerows(
            {k: csv_text(v) if isinstance(v, str) and k not in _NUMERIC_TEXT else v for k, v in item.items()}
            for item in items
        )
    return buf.getvalue()


_NUMERIC_TEXT = frozenset(("cost", "billed", "margin"))
"""Amounts are decimal strings written by us (a negative margin starts with ``-``)."""


def _money(value: str) -> str:
    return f"{Decimal(value):.6f}"


def wide_console() -> Console:
    """A console that does not squash tables to 80 columns when output goes to a file or pipe
    (unless ``COLUMNS`` says how wide to be); a terminal's own width is kept."""
    console = Console()
    return console if console.is_terminal or os.environ.get("COLUMNS") else Console(width=200)


_LAYOUTS: tuple[tuple[str, ...], ...] = (
    (
        "spans",
        "input",
        "output",
        "cache read",
        "cache write",
        "reasoning",
        "cost",
        "billed",
        "margin",
        "notes",
    ),
    ("spans", "input", "output", "cache r/w", "reasoning", "cost", "billed", "margin", "notes"),
    ("spans", "input", "output", "cache r/w", "cost", "billed", "margin", "notes"),
    ("spans", "input", "output", "cost", "billed", "notes"),
    ("spans", "tokens in/out", "billed", "notes"),
    ("spans", "billed"),
)
"""Usage table columns after the grouping keys, widest first: the first that fits the console is
shown (cache reads and writes merged, then reasoning, margin and the token split dropped)."""

_NUMERIC_COLUMNS = frozenset(_LAYOUTS[0] + _LAYOUTS[1] + _LAYOUTS[4]) - {"notes"}


def _usage_cells(item: dict[str, Any]) -> dict[str, str]:
    notes = []
    if item["unpriced_spans"]:
        notes.append(f"{item['unpriced_spans']} unpriced")
    if item["pending_spans"]:
        notes.append(f"{item['pending_spans']} pending")
    return {
        "spans": f"{item['spans']:,}",
        "input": f"{item['input_tokens']:,}",
        "output": f"{item['output_tokens']:,}",
        "cache read": f"{item['cache_read_tokens']:,}",
        "cache write": f"{item['cache_write_tokens']:,}",
        "cache r/w": f"{item['cache_read_tokens']:,}/{item['cache_write_tokens']:,}",
        "reasoning": f"{item['reasoning_tokens']:,}",
        "tokens in/out": f"{item['input_tokens']:,}/{item['output_tokens']:,}",
        "cost": _money(item["cost"]),
        "billed": _money(item["billed"]),
        "margin": _money(item["margin"]),
        "notes": ", ".join(notes),
    }


def _usage_table(
    items: list[dict[str, Any]], by: tuple[str, ...], columns: tuple[str, ...], cells: list[dict[str, str]]
) -> Table:
    table = Table(title="Usage", show_lines=False)
    for key in by:
        table.add_column(key, overflow="fold")
    for col in columns:
        numeric = col in _NUMERIC_COLUMNS
        table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric)
    for item, row in zip(items, cells, strict=True):
        table.add_row(*(cell(item[k]) for k in by), *(row[c] for c in columns))
    return table


def usage_table_columns(
    items: list[dict[str, Any]], by: tuple[str, ...], console: Console
) -> tuple[str, ...]:
    """The widest layout of ``_LAYOUTS`` whose table fits ``console`` without wrapping."""
    cells = [_usage_cells(item) for item in items]
    for columns in _LAYOUTS:
        table = _usage_table(items, by, columns, cells)
        if Measurement.get(console, console.options.update_width(10**6), table).maximum <= console.width:
            return columns
    return _LAYOUTS[-1]


def render_usage_table(items: list[dict[str, Any]], by: tuple[str, ...], console: Console) -> None:
    """Ids and names from spans are shown as plain, visible text (``display.cell``). The table
    fits the console: on a narrow terminal columns are merged or dropped (and said so); JSON
    and CSV always carry every field."""
    columns = usage_table_columns(items, by, console)
    console.print(_usage_table(items, by, columns, [_usage_cells(item) for item in items]))
    if columns != _LAYOUTS[0]:
        console.print(
            f"(narrowed to the terminal's {console.width} columns; --format json or csv has every field)",
            style="dim",
        )


def render_rows(title: str, items: list[dict[str, Any]], columns: tuple[str, ...], console: Console) -> None:
    """A plain table of ``columns`` of ``items`` (prices, alerts...): numbers right-aligned."""
    table = Table(title=title, show_lines=False)
    sample = items[0] if items else {}
    for col in columns:
        numeric = isinstance(sample.get(col), int | Decimal) or col in ("old", "new", "price", "percent")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    for item in items:
        table.add_row(*("" if item.get(c) is None else str(item.get(c)) for c in columns))
    console.print(table)


def print_rows(
    title: str, items: list[dict[str, Any]], columns: tuple[str, ...], fmt: str, out: Console | None = None
) -> str | None:
    """``items`` as ``fmt``: the JSON or CSV text returned (for the caller to echo), or the table printed."""
    if fmt == "json":
        return usage_json(items)
    if fmt == "csv":
        return usage_csv([{c: item.get(c) for c in columns} for item in items])
    render_rows(title, items, columns, out or wide_console())
    return None
