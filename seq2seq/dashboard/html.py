"""The HTML page of the sweep dashboard: one self-contained file (inline CSS/JS, PNGs as data URIs).

`render_page` knows markup only; `seq2seq.report` decides what goes on the page. The job table sorts on a
click of its header (plain inline JavaScript, no CDN); `index.html#sort=test/bleu:desc` opens it sorted.
After the script has run, `<body data-ready="1">`; a script error sets `data-js-error` instead.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; }
.subtitle { color: #555; margin-top: 0; }
section { margin: 2em 0; }
figure { display: inline-block; max-width: 100%; margin: 0 1.5em 1.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; max-width: 60em; }
table#jobs { border-collapse: separate; border-spacing: 0; font-size: 0.9em; }
.table-scroll { overflow-x: auto; max-width: 100%; border: 1px solid #ccc; }
#jobs th, #jobs td { border: 0 solid #ccc; border-width: 0 1px 1px 0; padding: 0.3em 0.6em; text-align: left;
                     vertical-align: top; white-space: nowrap; }
#jobs th { background: #e8eef7; cursor: pointer; user-select: none; }
#jobs tbody tr { background: #fff; }
#jobs th:first-child, #jobs td:first-child { position: sticky; left: 0; z-index: 1; background: inherit;
                                             box-shadow: 1px 0 0 #999; }
#jobs thead tr { background: #e8eef7; }
.shared { color: #444; font-size: 0.9em; }
figure.empty { border: 1px dashed #bbb; padding: 1em; color: #555; max-width: 40em; }
#jobs th[data-dir="asc"]::after { content: " \\25B2"; }
#jobs th[data-dir="desc"]::after { content: " \\25BC"; }
#jobs td.num { text-align: right; font-variant-numeric: tabular-nums; }
#jobs tr.status-failed { background: #fde2e2; }
#jobs tr.status-failed td.status { color: #a40000; font-weight: bold; }
#jobs tr.status-interrupted { background: #fff4d6; }
#jobs tr.status-interrupted td.status { color: #8a5a00; font-weight: bold; }
#jobs tr.status-never-ran { background: #f0f0f0; color: #777; }
.error { color: #a40000; font-family: monospace; font-weight: normal; white-space: pre-wrap;
         min-width: 16em; max-width: 32em; }
.heatmaps figure img { max-width: 360px; }
table.seeds { border-collapse: collapse; font-size: 0.9em; margin-bottom: 1.5em; }
.seeds th, .seeds td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
"""

# Runs before the table script so that an error there leaves a marker a test (or a person) can see.
_ERROR_HOOK = (
    '<script>window.addEventListener("error", function (e) '
    "{ document.body.dataset.jsError = String(e.message); });</script>"
)

_SORT_JS = """
(function () {
  var table = document.getElementById("jobs");
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var body = table.tBodies[0];
  function compare(a, b) {
    var x = Number(a), y = Number(b);
    if (!isNaN(x) && !isNaN(y)) return x - y;
    return a.localeCompare(b, undefined, {numeric: true});
  }
  function sortBy(col, dir) {
    headers.forEach(function (h) { delete h.dataset.dir; });
    headers[col].dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = r1.cells[col].dataset.sort, b = r2.cells[col].dataset.sort;
      if (a === b) return 0;
      if (a === "") return 1;  /* missing values last, whichever the direction */
      if (b === "") return -1;
      return dir === "asc" ? compare(a, b) : -compare(a, b);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  headers.forEach(function (th, col) {
    th.addEventListener("click", function () { sortBy(col, th.dataset.dir === "asc" ? "desc" : "asc"); });
  });
  var match = /^#sort=([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(window.location.hash));
  if (match) {
    var col = headers.findIndex(function (h) { return h.dataset.key === match[1]; });
    if (col >= 0) sortBy(col, match[2] || "asc");
  }
  document.body.dataset.ready = "1";
})();
"""


@dataclass
class JobRow:
    """One row of the job table: cell values in column order, the job's status and its error (if any)."""

    cells: list[object]
    status: str
    error: str | None = None


def format_value(value: object) -> str:
    """Human-readable cell text: thousands separators for big numbers, 4 significant digits otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def png_data_uri(path: Path) -> str:
    """`data:image/png;base64,...` for a PNG file, so the page needs no files beside it."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _sort_key(value: object) -> str:
    """What the table script sorts on: the raw value (numbers parse in JS), "" when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _figure(caption: str, png: Path | str, alt: str) -> str:
    """A figure, or (``png`` a sentence) a box saying why there is none."""
    if isinstance(png, str):
        return f'<figure class="empty"><p>{html.escape(png)}</p><figcaption>{html.escape(caption)}</figcaption></figure>'
    return (
        f'<figure><img alt="{html.escape(alt)}" src="{png_data_uri(png)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _figures(figures: list[tuple[str, Path | str]]) -> str:
    return "".join(_figure(caption, png, getattr(png, "stem", "not drawn")) for caption, png in figures)


def _table(columns: list[str], rows: list[JobRow]) -> str:
    head = "".join(f'<th data-key="{html.escape(c)}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(columns, row.cells, strict=True):
            text = html.escape(format_value(value))
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = "num" if numeric else ("status" if column == "status" else "")
            if column == "status" and row.error:
                text += f'<div class="error">{html.escape(row.error)}</div>'
            cells.append(f'<td class="{css}" data-sort="{html.escape(_sort_key(value))}">{text}</td>')
        status_class = "status-" + "".join(ch if ch.isalnum() else "-" for ch in row.status)
        body.append(f'<tr class="job {status_class}">{"".join(cells)}</tr>')
    return f'<table id="jobs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _plain_table(caption: str, columns: list[str], rows: list[list[str]]) -> str:
    """A caption and a plain (unsorted) table of text cells."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return (
        f"<p>{html.escape(caption)}</p>"
        f'<div class="table-scroll"><table class="seeds"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


ALIGNMENT_NOTE = (
    '<p class="shared">test/alignment_accuracy: % of target words whose teacher-forced attention argmax is the '
    "gold source word; a Transformer decoder's is its last layer's cross-attention, heads averaged (each head: "
    "Alignment per decoder layer and head).</p>"
)


def render_page(
    *,
    title: str,
    subtitle: str,
    results: list[tuple[str, Path | str]],
    columns: list[str],
    rows: list[JobRow],
    training: list[tuple[str, Path | str]],
    heatmaps: list[tuple[str, list[Path]]],
    influence: list[tuple[str, Path]] | None = None,
    seeds: list[tuple[str, list[str], list[list[str]]]] | None = None,
    seed_figures: list[tuple[str, Path]] | None = None,
    shared: dict[str, object] | None = None,
    head_maps: list[tuple[str, Path]] | None = None,
) -> str:
    """The whole dashboard page, in this order:

    results: (caption, PNG or why it is missing) pairs of the headline figures; columns/rows: the sortable job
    table, after ``shared`` (the settings every job has, not repeated as columns);
    training: (caption, PNG) pairs of training figures; heatmaps: (job, PNGs) of attention heatmaps;
    influence: (caption, PNG) pairs of the influence-by-source-position figure (after the results);
    seeds: (caption, columns, rows) text tables and seed_figures (caption, PNG) of the seeds and significance
    section (after the results); head_maps: (job, PNG) of the alignment accuracy per Transformer decoder layer
    and head (after the influence).
    """
    heatmap_html = "".join(
        f"<h3>job {html.escape(job)}</h3>"
        + "".join(_figure(png.name, png, f"attention heatmap {job}/{png.name}") for png in pngs)
        for job, pngs in heatmaps
    )
    sections = [
        f"<section><h2>Results</h2>{_figures(results)}</section>" if results else "",
        (
            '<section id="seeds"><h2>Seeds and significance</h2>'
            + "".join(_plain_table(*table) for table in seeds or [])
            + _figures(seed_figures or [])
            + "</section>"
        )
        if seeds or seed_figures
        else "",
        f"<section><h2>Influence by source position</h2>{_figures(influence)}</section>" if influence else "",
        (
            '<section id="alignment-heads"><h2>Alignment per decoder layer and head</h2>'
            + "".join(
                _figure(
                    f"job {job}: test alignment accuracy (%) per layer (rows) and head (columns; "
                    "mean = the layer's average); the best head framed.",
                    png,
                    f"alignment heads {job}",
                )
                for job, png in head_maps
            )
            + "</section>"
        )
        if head_maps
        else "",
        "<section><h2>Jobs</h2><p>Click a column header to sort; scroll sideways on a narrow screen.</p>"
        + (ALIGNMENT_NOTE if "test/alignment_accuracy" in columns else "")
        + (
            '<p class="shared">Every job: '
            + ", ".join(f"{html.escape(k)} = {html.escape(format_value(v))}" for k, v in shared.items())
            + "</p>"
            if shared
            else ""
        )
        + f'<div class="table-scroll">{_table(columns, rows)}</div></section>',
        f"<section><h2>Training</h2>{_figures(training)}</section>" if training else "",
        f'<section class="heatmaps"><h2>Attention heatmaps</h2>{heatmap_html}</section>' if heatmaps else "",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>{_ERROR_HOOK}<h1>{html.escape(title)}</h1>"
        f'<p class="subtitle">{html.escape(subtitle)}</p>\n'
        + "\n".join(s for s in sections if s)
        + f"\n<script>{_SORT_JS}</script></body></html>\n"
    )
