"""Write a study's results: ``predictions.csv``, ``metrics.json``, ``figures/`` and ``report.html``.

The report is one self-contained HTML page (figures inlined as PNG data URIs, no external asset),
readable offline and printable for a tumour board. Nothing in it names a patient by anything
but the pseudonymous key.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#1a1a1a;line-height:1.45;padding:0 1em}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:520px}figure img{max-width:100%}
figure.wide{display:block;max-width:100%}
figcaption{font-size:.85em;color:#555}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em}
"""


def _number(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return html.escape(str(value))


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as a plain HTML table (numbers to 3 decimals)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or "", *df.columns])
    rows = "".join("<tr>" + f"<td>{html.escape(str(i))}</td>" + "".join(f"<td>{_number(v)}</td>" for v in row)
                   + "</tr>" for i, row in zip(df.index, df.itertuples(index=False), strict=True))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def save_figures(figures: Mapping[str, Figure], folder: Path) -> dict[str, bytes]:
    """Write each figure as PNG and SVG into ``folder``; return the PNG bytes by name."""
    folder.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for name, fig in figures.items():
        pngs[name] = _png(fig)
        (folder / f"{name}.png").write_bytes(pngs[name])
        fig.savefig(folder / f"{name}.svg", format="svg", bbox_inches="tight")
    return pngs


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure_html(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode()
    width, height = _png_size(png)
    wide = ' class="wide"' if width >= 1400 else ""  # multi-panel figures get the page's width
    return (f'<figure{wide}><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(title: str, sections: list[tuple[str, str]]) -> str:
    """Assemble the page from (heading, HTML body) sections."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, b in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def figure_section(pngs: Mapping[str, bytes], prefix: str, captions: Mapping[str, str]) -> str:
    """All figures whose name starts with ``prefix``, inlined."""
    return "".join(_figure_html(n, p, captions.get(n, n)) for n, p in pngs.items() if n.startswith(prefix))


def write_outputs(results_dir: Path, *, metrics: Mapping[str, Any], predictions: pd.DataFrame,
                  sections: list[tuple[str, str]], title: str) -> Path:
    """Write the fixed output contract into ``results_dir`` and return the report's path.

    Parameters
    ----------
    results_dir : Path
    metrics : mapping
        Nested numbers (JSON-serialisable; NaN written as null).
    predictions : DataFrame
        One row per patient.
    sections : list of (heading, HTML)
        Report body; use :func:`figure_section` and :func:`table_html` to build them.
    title : str
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(results_dir / "predictions.csv", index=False)
    (results_dir / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2))
    report = results_dir / "report.html"
    report.write_text(render_html(title, sections))
    return report


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value
