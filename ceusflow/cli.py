"""The ``ceusflow`` command line: parses arguments and calls library functions, nothing more.

Bad input is reported as one line on stderr (``ceusflow: <source>: <reason>; <hint>``) with
exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ceusflow.errors import InputError

app = typer.Typer(
    name="ceusflow",
    help="CEUS cines to validated survival models and treatment recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PAPER = {"n_patients": 419, "fps": 25.0, "image_size": (600, 800)}


def _fail(err: InputError) -> None:
    typer.echo(f"ceusflow: {err}", err=True)
    raise typer.Exit(code=2)


def _progress_bar(total: int, label: str):  # noqa: ANN202 - returns (context manager, callback)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), transient=False)
    task = bar.add_task(label, total=total)
    return bar, lambda done, _total: bar.update(task, completed=done)


def _print_summary(result) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    table = Table(title=f"Synthetic cohort written to {result.cohort_dir}")
    table.add_column("quantity")
    table.add_column("RFA", justify="right")
    table.add_column("SR", justify="right")
    table.add_row("patients", f"{s['n_RFA']:.0f}", f"{s['n_SR']:.0f}")
    table.add_row("oracle C-index (true log-hazard)", f"{s.get('oracle_c_RFA', float('nan')):.3f}",
                  f"{s.get('oracle_c_SR', float('nan')):.3f}")
    table.add_row("share better under the other treatment", f"{s['swap_share_RFA']:.1%}", f"{s['swap_share_SR']:.1%}")
    console = Console()
    console.print(table)
    console.print(f"event rate {s['event_rate']:.1%}; median follow-up of censored patients "
                  f"{s['median_follow_up_months']:.1f} months; swap share overall {s['swap_share']:.1%}")
    console.print(f"DICOM {result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f} s "
                  f"({result.seconds / max(s['n'], 1):.2f} s/patient); ground truth in {result.truth_dir}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Cohort folder to create (the truth goes to OUT-truth beside it).")],
    n_patients: Annotated[int, typer.Option("--patients", "-n", help="Number of patients.")] = 32,
    fps: Annotated[float, typer.Option(help="Frame rate (real scanners: 20-25).")] = 3.0,
    duration_s: Annotated[float, typer.Option("--duration", help="Exam length in seconds.")] = 180.0,
    rows: Annotated[int, typer.Option(help="Frame height in pixels.")] = 128,
    cols: Annotated[int, typer.Option(help="Frame width in pixels (both panels on a dual display).")] = 160,
    seed: Annotated[int, typer.Option(help="Seed: same seed and options give identical bytes.")] = 0,
    paper: Annotated[bool, typer.Option("--paper", help="Paper scale: 419 patients, 25 fps, 600x800.")] = False,
    clean: Annotated[bool, typer.Option("--clean", help="Do not inject messy inputs.")] = False,
    workers: Annotated[int, typer.Option(help="0: in-process; N: N local processes (same bytes).")] = 0,
) -> None:
    """Write a synthetic CEUS cohort (DICOM + clinical.csv + rois.csv) with known ground truth."""
    from ceusflow.simulate import SimulationConfig, write_synthetic_export

    size = PAPER["image_size"] if paper else (rows, cols)
    config = SimulationConfig(
        n_patients=PAPER["n_patients"] if paper else n_patients, fps=PAPER["fps"] if paper else fps,
        duration_s=duration_s, image_size=size, seed=seed, messy=not clean)
    bar, update = _progress_bar(config.n_patients, "simulating patients")
    try:
        with bar:
            result = write_synthetic_export(out, config, workers=workers, progress=update)
    except InputError as err:
        _fail(err)
    _print_summary(result)


@app.command()
def convert(
    cohort: Annotated[Path, typer.Argument(help="Hospital export: dicom/**, clinical.csv, rois.csv.")],
    store: Annotated[Path, typer.Option("--store", help="Zarr store to create or complete.")] = Path(
        "stores/cohort.zarr"),
    workers: Annotated[int, typer.Option(help="0: in-process; N: N local single-threaded processes.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of a dask.distributed scheduler.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail if any input is skipped or flagged.")] = False,
    max_fps: Annotated[float | None, typer.Option(help="Store at most this many frames per second.")] = None,
    codec: Annotated[str, typer.Option(
        help="lz4 (faster conversion) | zstd (15-33 % smaller store) | none (fastest, 2-3x the disk).")] = "lz4",
) -> None:
    """Convert DICOM cines + clinical table into one de-identified, chunked Zarr store (resumable)."""
    from ceusflow.convert import convert_cohort

    try:
        report = convert_cohort(cohort, store, workers=workers, scheduler=scheduler, strict=strict,
                                max_fps=max_fps, codec=codec, progress=True)
    except InputError as err:
        _fail(err)
    raise typer.Exit(code=report.exit_code(strict=strict))


@app.command("config")
def print_config() -> None:
    """Print the full, commented default study configuration (TOML) for ``run --config``."""
    from ceusflow.pipeline.config import DEFAULT_TOML

    typer.echo(DEFAULT_TOML, nl=False)


@app.command()
def run(
    cohort: Annotated[Path, typer.Argument(help="Hospital export: dicom/**, clinical.csv, rois.csv.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder.")] = Path("results"),
    config: Annotated[Path | None, typer.Option(help="Study TOML (see `ceusflow config`).")] = None,
    store: Annotated[Path | None, typer.Option(help="Cohort store (default stores/<out name>.zarr).")] = None,
    workers: Annotated[int, typer.Option(help="0: in-process; N: N local processes.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of a dask.distributed scheduler.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (overrides the config).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the config).")] = None,
) -> None:
    """Run the whole study: convert, preprocess, split, train R-RFA/R-SR, statistics, recommendations, report."""
    import dataclasses

    from ceusflow.pipeline.config import load_config
    from ceusflow.pipeline.run import run_study

    try:
        study = load_config(config, seed=seed)
        if device:
            study = dataclasses.replace(study, train=dataclasses.replace(study.train, device=device))
        summary = run_study(cohort, out, study, store=store, workers=workers, scheduler=scheduler)
    except InputError as err:
        _fail(err)
    typer.echo(f"report: {summary.report}")


DEMO = {"n_patients": 96, "fps": 2.0, "rows": 96, "cols": 128}


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Working folder for the demo.")] = Path("stores/demo"),
    n_patients: Annotated[int, typer.Option("--patients", "-n")] = DEMO["n_patients"],
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(help="Local processes for convert and preprocess.")] = 2,
) -> None:
    """Simulate a small synthetic cohort and run the whole study on it (a few minutes on 2 cores)."""
    import shutil
    import time

    from ceusflow.pipeline.demo import summarise_demo
    from ceusflow.pipeline.run import run_study
    from ceusflow.simulate import truth_dir_for

    start = time.perf_counter()
    cohort, results = out / "cohort", out / "results"
    for folder in (cohort, truth_dir_for(cohort), results, out / "cohort.zarr", out / "cohort-roi.zarr"):
        shutil.rmtree(folder, ignore_errors=True)
    simulate(cohort, n_patients=n_patients, fps=DEMO["fps"], rows=DEMO["rows"], cols=DEMO["cols"], seed=seed)
    _demo_secret(out, seed)
    try:
        summary = run_study(cohort, results, store=out / "cohort.zarr", workers=workers)
    except InputError as err:
        _fail(err)
    typer.echo(summarise_demo(results, truth_dir_for(cohort), out / "cohort.zarr"))
    typer.echo(f"report: {summary.report}  (total {time.perf_counter() - start:.0f} s)")


def _demo_secret(out: Path, seed: int) -> None:
    """Pseudonym secret of the (synthetic) demo, derived from the seed.

    Pseudonyms set the patients' order, hence the split and the training: a fixed secret makes
    ``ceusflow demo`` give the same numbers on every machine. Real projects keep a random secret.
    """
    import hashlib
    import os

    path = out / ".ceusflow-secret"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(hashlib.sha256(f"ceusflow-demo-{seed}".encode()).hexdigest() + "\n")


def _register_stage_commands() -> None:
    from ceusflow import cli_model, cli_preprocess, cli_truth

    cli_preprocess.register(app)
    cli_model.register(app)
    cli_truth.register(app)


_register_stage_commands()


def main() -> None:
    """Entry point of the ``ceusflow`` console script."""
    try:
        app()
    except InputError as err:  # raised outside a command's own handler
        typer.echo(f"ceusflow: {err}", err=True)
        sys.exit(2)
