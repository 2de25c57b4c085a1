"""Output for humans and for scripts, from the same data.

``--json`` prints the admin API's result unchanged (its field names are the stable contract).
Otherwise a terminal gets rich tables, and a pipe gets plain whitespace-aligned text with no
colour or box drawing, so ``schedctl runs list | grep failed`` works.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_out = Console(highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def inline_json(value: Any) -> str:
    """A value on one line, for a field whose content is JSON (a Python task's arguments)."""
    return json.dumps(value, ensure_ascii=False)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> None:
    texts = [[cell(v) for v in row] for row in rows]
    if _out.is_terminal:
        t = Table(title=title, header_style="bold")
        for c in columns:
            t.add_column(c)
        for row in texts:
            t.add_row(*row, style=None)
        _out.print(t)
        return
    widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]
    for row in [list(columns), *texts]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        if _out.is_terminal:
            _out.print(f"[bold]{key.ljust(width)}[/bold]  {cell(value)}", markup=True)
        else:
            print(f"{key.ljust(width)}  {cell(value)}")


def text(value: str) -> None:
    print(value, end="" if value.endswith("\n") else "\n")
