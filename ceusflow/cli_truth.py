"""Ground-truth command of the ``ceusflow`` CLI: ``truth``.

``register(app)`` adds it to a Typer app. It prints the paper vs ceusflow vs ground-truth table of a
study run on a simulated cohort and optionally writes it as CSV (numbers) or Markdown (formatted).
Bad input: one line on stderr and exit code 2. Aggregates only: no patient identifier is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ceusflow.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["register", "truth_command", "write_table"]


def _fail(err: InputError) -> None:
    typer.echo(f"ceusflow: {err}", err=True)
    raise typer.Exit(code=2)


def write_table(table: pd.DataFrame, out: Path) -> Path:
    """Write the table of ``compare_with_truth``: ``.csv`` (numbers, NaN empty) or ``.md`` (formatted)."""
    from ceusflow.pipeline.truth import format_table, to_markdown

    suffix = out.suffix.lower()
    if suffix not in (".csv", ".md"):
        raise InputError(str(out), f"unknown table format {out.suffix!r}", "use a .csv or .md file name")
    if not out.parent.is_dir():
        raise InputError(str(out.parent), "folder not found", "create it first")
    if suffix == ".csv":
        table.reset_index().to_csv(out, index=False)
    else:
        out.write_text(to_markdown(format_table(table)))
    return out


def _print(table: pd.DataFrame, compact: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from ceusflow.pipeline.truth import format_table

    shown = format_table(table, compact=compact)
    rich_table = Table(title="Paper vs ceusflow vs ground truth")
    for name in ("quantity", "treatment", "cohort", "paper", "ceusflow", "truth"):
        rich_table.add_column(name, no_wrap=True, justify="left" if name == "quantity" else "right")
    for row in shown[["quantity", "treatment", "cohort", "paper", "ceusflow", "truth"]].itertuples(index=False):
        rich_table.add_row(*row)
    Console(width=max(Console().width, 120)).print(rich_table)


def truth_command(
    results: Annotated[Path, typer.Argument(help="Results folder of `ceusflow run` (predictions.csv, metrics.json).")],
    truth: Annotated[Path, typer.Option(help="The simulator's COHORT-truth folder (patients.csv).")],
    pseudonyms: Annotated[Path, typer.Option(help="The store's mapping STORE.pseudonyms.csv.")],
    out: Annotated[Path | None, typer.Option(help="Also write the table: FILE.csv (numbers) or FILE.md.")] = None,
    compact: Annotated[bool, typer.Option(help="Print only the key rows, without CIs.")] = False,
) -> None:
    """Compare a study on a simulated cohort with the paper's numbers and the simulator's ground truth."""
    from ceusflow.pipeline.truth import compare_with_truth

    try:
        table = compare_with_truth(results, truth, pseudonyms)
        written = write_table(table, out) if out is not None else None
    except InputError as err:
        _fail(err)
    _print(table, compact)
    if written is not None:
        typer.echo(f"table written to {written}")


def register(app: typer.Typer) -> None:
    """Add the ``truth`` command to ``app``."""
    app.command("truth")(truth_command)
