"""Convert a hospital export (``COHORT/dicom/**``, ``clinical.csv``, ``rois.csv``) into a cohort store.

Streaming (frames decoded and written shard by shard), parallel per patient (local processes,
or a ``dask.distributed`` cluster by address), resumable (finished patients are skipped; a
patient appears only when complete, see :mod:`ceusflow.store`), de-identified (pseudonymous keys;
no file path, identifier, date or private tag in the store) and tolerant: a bad input is reported
in one line naming its path under the export, and the batch goes on.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ceusflow.conventions import PATIENT
from ceusflow.errors import InputError
from ceusflow.io import pseudonyms
from ceusflow.io.clinical import read_clinical, read_rois
from ceusflow.io.dicom import cine_from_clips, order_clips, require_cine
from ceusflow.io.header import Clip, open_clip, relative_name
from ceusflow.parallel import map_patients
from ceusflow.store import (
    DEFAULT_CODEC,
    SHARD_FRAMES,
    compressor,
    create_store,
    finalize,
    finished_patients,
    write_patient,
    write_table,
)

Problem = tuple[str, str]  # (path under the export, or CSV row, or patient key; reason)


@dataclass(frozen=True)
class PatientTask:
    """One patient to convert (picklable; sent to a worker)."""

    key: str
    paths: tuple[str, ...]
    cohort_dir: str
    store: str
    roi: tuple[float, float, float, float] | None = None
    max_fps: float | None = None
    codec: str = DEFAULT_CODEC


@dataclass(frozen=True)
class PatientResult:
    """What a worker did for one patient."""

    key: str
    frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    problems: tuple[Problem, ...] = ()
    store_problems: tuple[dict[str, Any], ...] = ()


@dataclass
class ConvertReport:
    """Summary of a conversion.

    Attributes
    ----------
    store : Path
    mapping : Path
        The pseudonym -> PatientID CSV (0600), outside the store.
    converted, resumed, failed : list of str
        Patient keys written now, found finished from an earlier run, and skipped.
    frames, bytes_in, bytes_out : int
        Frames written; DICOM bytes read; store bytes written.
    seconds : float
    problems : list of (source, reason)
        One per skipped or flagged input, sources as paths under the export.
    """

    store: Path
    mapping: Path
    converted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per problem: ``"<source>: <reason>"``."""
        return [f"{source}: {reason}" for source, reason in self.problems]

    def exit_code(self, *, strict: bool = False) -> int:
        """0 when something converted (and, with ``strict``, nothing was skipped); else 1."""
        done = bool(self.converted or self.resumed)
        return 0 if done and not (strict and self.problems) else 1


def convert_cohort(
    cohort_dir: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    workers: int = 0,
    scheduler: Any = None,
    strict: bool = False,
    max_fps: float | None = None,
    codec: str = DEFAULT_CODEC,
    progress: bool = True,
    secret: str | os.PathLike[str] | None = None,
) -> ConvertReport:
    """Convert an export into a Zarr cohort store (resumable; see the module docstring).

    Parameters
    ----------
    cohort_dir : path-like
        Export: ``dicom/**`` (one file per clip, any nesting), ``clinical.csv``, ``rois.csv``.
    store : path-like
        Zarr store to create or complete (e.g. ``stores/NAME.zarr``).
    workers : int
        0: in-process; N: N local single-threaded worker processes.
    scheduler : str or distributed.Client, optional
        Address of a dask.distributed scheduler (or a Client) to convert on instead.
    strict : bool
        Raise InputError at the end when any input was skipped or flagged.
    max_fps : float, optional
        Keep at most this many frames per second (greedy on frame times); None keeps all.
    codec : {"zstd", "lz4", "none"}
        Lossless Blosc codec of the cines: zstd stores 15-30 % fewer bytes, lz4 converts faster,
        none stores the frames uncompressed (fastest, 2-3x the bytes of lz4; ``docs/store.md``).
        Patients already in the store keep theirs.
    progress : bool
        Show a progress bar (patients, frames/s, MB/s) and the problem lines on the terminal.
    secret : path-like, optional
        Project secret for pseudonyms; default ``<store's folder>/.ceusflow-secret`` (0600).

    Returns
    -------
    ConvertReport
        The mapping CSV is ``<store's folder>/<store name>.pseudonyms.csv`` (0600).

    Raises
    ------
    InputError
        No patient could be converted, or ``strict`` and some input was skipped.
    """
    start, cohort, store = time.perf_counter(), Path(cohort_dir), Path(store)
    compressor(codec)  # unknown codec: fail before any work
    key = pseudonyms.load_secret(secret or store.parent / ".ceusflow-secret")
    report = ConvertReport(store, store.parent / f"{store.name}.pseudonyms.csv")
    groups, report.problems = _group_files(cohort, key)
    n_file_problems = len(report.problems)
    clinical, rois, table_problems = _tables(cohort, key)
    report.problems += table_problems
    create_store(store)
    done = finished_patients(store)
    report.resumed = sorted(set(groups) & done)
    tasks = [_task(k, v, cohort, store, rois, max_fps, codec) for k, v in sorted(groups.items()) if k not in done]
    results = _run(tasks, workers=workers, scheduler=scheduler, progress=progress, total=len(groups),
                   already=len(report.resumed))
    _collect(report, results)
    keyed = _write_tables(store, report, clinical, rois, set(groups))
    pseudonyms.write_mapping(report.mapping, sorted(set(groups) | set(clinical[PATIENT].values)))
    report.seconds = time.perf_counter() - start
    stored = [*table_problems, *keyed]
    finalize(store, _provenance(report, results, stored, n_file_problems, max_fps))
    return _conclude(report, progress=progress, strict=strict)


def _group_files(cohort: Path, secret: bytes) -> tuple[dict[str, list[str]], list[Problem]]:
    groups: dict[str, list[str]] = {}
    problems: list[Problem] = []
    folder = cohort / "dicom"
    if not folder.is_dir():
        raise InputError(str(cohort), "no dicom/ folder", "point to the export folder")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = relative_name(path, cohort)
        try:
            groups.setdefault(pseudonyms.patient_key(path, secret, source=name), []).append(str(path))
        except InputError as err:
            problems.append((name, _reason(err)))
    return groups, problems


def _tables(cohort: Path, secret: bytes) -> tuple[xr.Dataset, Any, list[Problem]]:
    """clinical.csv and rois.csv under pseudonyms; problems name CSV rows, never PatientIDs."""
    clinical, problems = read_clinical(cohort / "clinical.csv", secret)
    rois = read_rois(cohort / "rois.csv", secret) if (cohort / "rois.csv").is_file() else None
    return clinical, rois, problems


def _task(key: str, paths: list[str], cohort: Path, store: Path, rois: Any, max_fps: float | None,
          codec: str) -> PatientTask:
    roi = None
    if rois is not None and key in set(rois[PATIENT]):
        row = rois[rois[PATIENT] == key].iloc[0]
        roi = (float(row.x0), float(row.y0), float(row.x1), float(row.y1))
    return PatientTask(key, tuple(paths), str(cohort), str(store), roi, max_fps, codec)


def convert_patient(task: PatientTask) -> PatientResult:
    """Convert one patient (runs in a worker): open, validate, assemble, write atomically.

    Parameters
    ----------
    task : PatientTask

    Returns
    -------
    PatientResult
    """
    problems: list[Problem] = []
    clips = order_clips(_open_clips(task, problems))
    cine = _assemble(clips, task, problems)
    if cine is None:
        return PatientResult(task.key, problems=tuple(problems), store_problems=_anonymous(task.key, problems))
    sources = [c.header.source for c in clips if c.header.source in cine.attrs["source"]]
    cine.attrs.update(flags=_scrub(cine.attrs["flags"], sources), n_clips=len(sources))
    del cine.attrs["source"]
    problems += [(task.key, flag) for flag in cine.attrs["flags"]]
    written = write_patient(task.store, task.key, cine, shard_frames=SHARD_FRAMES, codec=task.codec)
    bytes_in = sum(os.path.getsize(c.spec.path) for c in clips if c.header.source in sources)
    return PatientResult(task.key, int(cine.sizes["time"]), bytes_in, written, tuple(problems),
                         _anonymous(task.key, [p for p in problems if p[0] != task.key]))


def _open_clips(task: PatientTask, problems: list[Problem]) -> list[Clip]:
    clips = []
    for path in task.paths:
        try:
            clip = require_cine(open_clip(path, root=task.cohort_dir))
        except InputError as err:
            problems.append((err.source, _reason(err)))
            continue
        clips.append(_decimate(clip, task.max_fps) if task.max_fps else clip)
    return clips


def _decimate(clip: Clip, max_fps: float) -> Clip:
    keep, last = [], -np.inf
    for i, t in enumerate(clip.times_s):
        if t >= last + 1.0 / max_fps - 1e-6:
            keep.append(i)
            last = t
    return replace(clip, keep=np.asarray(keep, dtype=int))


def _assemble(clips: list[Clip], task: PatientTask, problems: list[Problem]) -> xr.DataArray | None:
    """The patient's cine; a clip that does not fit (size, spacing, region) is dropped and reported."""
    while clips:
        try:
            return cine_from_clips(clips, roi=task.roi, frames_per_chunk=SHARD_FRAMES)
        except InputError as err:
            problems.append((err.source, _reason(err)))
            clips = [c for c in clips if c.header.source != err.source]
    if not problems:
        problems.append((task.key, "no usable clip"))
    return None


def _scrub(flags: Iterable[str], sources: list[str]) -> list[str]:
    """Flags with file paths (which may hold IDs, names or UIDs) replaced by clip numbers."""
    out = []
    for flag in flags:
        for i, source in enumerate(sources):
            flag = flag.replace(source, f"clip {i}")
        out.append(flag)
    return out


def _anonymous(key: str, problems: Iterable[Problem]) -> tuple[dict[str, Any], ...]:
    return tuple({"source": key, "reason": reason} for _, reason in problems)


def _reason(err: InputError) -> str:
    return f"{err.reason}; {err.hint}" if err.hint else err.reason


def _run(tasks: list[PatientTask], *, workers: int, scheduler: Any, progress: bool, total: int,
         already: int) -> list[PatientResult]:
    results: list[PatientResult] = []
    with _Progress(progress, total, already) as bar:
        for result in map_patients(convert_patient, tasks, workers=workers, scheduler=scheduler,
                                   name=lambda t: f"convert-{t.key}"):
            results.append(result)
            bar.advance(result)
    return results


def _collect(report: ConvertReport, results: list[PatientResult]) -> None:
    for result in results:
        (report.converted if result.frames else report.failed).append(result.key)
        report.frames += result.frames
        report.bytes_in += result.bytes_in
        report.bytes_out += result.bytes_out
        report.problems.extend(result.problems)


def _write_tables(store: Path, report: ConvertReport, clinical: xr.Dataset, rois: Any,
                  imaged: set[str]) -> list[Problem]:
    stored = set(report.converted) | set(report.resumed)
    keyed = [(k, "no row in clinical.csv; images kept") for k in sorted(imaged - set(clinical[PATIENT].values))]
    keyed += [(k, "clinical row without images; dropped") for k in sorted(set(clinical[PATIENT].values) - imaged)]
    report.problems += keyed
    write_table(store, "clinical", clinical.sel({PATIENT: sorted(stored & set(clinical[PATIENT].values))}))
    if rois is not None:
        kept = rois[rois[PATIENT].isin(stored)].reset_index(drop=True)
        write_table(store, "rois", xr.Dataset.from_dataframe(kept.rename_axis("roi")))
    return keyed


def _provenance(report: ConvertReport, results: list[PatientResult], stored: list[Problem],
                n_file_problems: int, max_fps: float | None) -> dict[str, Any]:
    """Root attrs, without any path (paths may hold IDs, names, UIDs).

    Files not assignable to a patient are only counted; patient problems carry the pseudonym;
    CSV problems their row number.
    """
    anonymous = [p for r in results for p in r.store_problems]
    keyed = [{"source": s, "reason": r} for s, r in stored]
    return {
        "ceusflow_version": _version(), "pseudonyms": "HMAC-SHA256 of PatientID, secret kept outside",
        "n_patients": len(report.converted) + len(report.resumed), "n_failed": len(report.failed),
        "n_frames_this_run": report.frames, "max_fps": max_fps,
        "skipped": anonymous + keyed, "n_unassigned_files_skipped": n_file_problems,
        "skipped_by_reason": dict(Counter(_short(r) for _, r in report.problems)),
    }


def _short(reason: str) -> str:
    text = reason.split(";")[0].split(" (")[0]
    text = text.split(": ", 1)[1] if text.startswith("clip ") and ": " in text else text
    return text.split(":")[0]


def _version() -> str:
    try:
        return version("ceusflow")
    except PackageNotFoundError:
        return "unknown"


def _conclude(report: ConvertReport, *, progress: bool, strict: bool) -> ConvertReport:
    if progress:
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        for line in report.lines():
            console.print(line, markup=False)
        console.print(f"{len(report.converted)} converted, {len(report.resumed)} already done, "
                      f"{len(report.failed)} failed, {len(report.problems)} problems")
    if not (report.converted or report.resumed):
        raise InputError(str(report.store), "no patient could be converted", "see the problems listed above")
    if strict and report.problems:
        raise InputError(str(report.store), f"{len(report.problems)} inputs skipped or flagged (strict)",
                         "fix them or rerun without --strict")
    return report


class _Progress:
    """Rich progress bar (patients, frames/s, MB/s), or nothing."""

    def __init__(self, enabled: bool, total: int, already: int) -> None:
        self.enabled, self.total, self.already = enabled, total, already
        self.frames, self.bytes, self.start = 0, 0, time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("patients"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task("convert", total=self.total, completed=self.already, rate="")
        return self

    def advance(self, result: PatientResult) -> None:
        """Count one finished patient."""
        self.frames, self.bytes = self.frames + result.frames, self.bytes + result.bytes_in
        if self.enabled:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            rate = f"{self.frames / elapsed:,.0f} frames/s  {self.bytes / elapsed / 1e6:,.1f} MB/s"
            self.bar.update(self.task, advance=1, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

