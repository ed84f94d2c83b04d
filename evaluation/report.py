"""How evaluate.py's report is written: text tables (report.txt), the HTML page of examples
(index.html) and plain JSON (report.json). Nothing here computes a metric; each evaluator
formats its own section of report.txt with ``fmt`` and ``table``."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from face3d.fileio import atomic_write
from face3d.imageio import write_png
from util.html import HTMLPage

# ------------------------------------------------------------------------------ text


def fmt(v, spec: str = "{:.2f}") -> str:
    """A figure for a table: '-' where there is no value, 'inf' for an infinite one."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return spec.format(v)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Right-aligned columns under a header and a rule of dashes."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    return "\n".join([line(header), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in rows])


def format_report(r: dict, evaluators) -> str:
    """report.txt: the run's header, then each evaluator's section (``evaluators``: the
    evaluator classes in report order; a section is made from the report alone, so a saved
    report.json formats the same), then the timings."""
    out = [f"Rotate-and-Render evaluation: {r['name']} ({', '.join(r['modes'])})",
           f"photos: {r['photos']['evaluated']} evaluated of {r['photos']['requested']} "
           f"({r['photos']['failed']} failed); crop {r['crop_size']}, seed {r['seed']}, "
           f"device {r['device']}",
           f"checkpoint: {r['checkpoint'] or 'none'}",
           r["identity"]["message"], ""]
    for cls in evaluators:
        out += cls.text(r)
    out.append("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timing_s"].items()))
    return "\n".join(out)


# ------------------------------------------------------------------------------ files


def json_safe(o):
    """Plain JSON: numpy scalars as numbers, NaN / inf (no value) as null."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_text(path: str, text: str):
    """Write a whole file or nothing: an interrupted run leaves no half report."""
    with atomic_write(path) as f:
        f.write(text)


def write_report(out_dir: str, report: dict, text: str, failures):
    """report.json, report.txt and failures.txt in ``out_dir``."""
    write_text(os.path.join(out_dir, "report.json"),
               json.dumps(json_safe(report), indent=1, allow_nan=False))
    write_text(os.path.join(out_dir, "report.txt"), text + "\n")
    write_text(os.path.join(out_dir, "failures.txt"),
               "".join(f"{r}\t{why}\n" for r, why in failures))


# ------------------------------------------------------------------------------ html


def safe_stem(rel: str) -> str:
    """A photo's path as a short folder name."""
    stem = os.path.splitext(rel)[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[-80:]


class Example:
    """One photo shown on index.html: its aligned source, one row of rotations per mode
    ({mode: [(render path or None, output path, caption)]}), images under ``folder``."""

    def __init__(self, rel: str, folder: str, crop: np.ndarray):
        self.rel, self.folder = rel, folder
        self.source = write_png(crop, os.path.join(folder, "source.png"))
        self.rows: dict[str, list] = {}


class Gallery:
    """The examples of index.html: the first ``max_rows`` photos scored, plus sections that
    evaluators add (``section``), one table each, one row per example."""

    def __init__(self, out_dir: str, max_rows: int):
        self.out_dir, self.max_rows = out_dir, max_rows
        self.examples: list[Example] = []
        self.sections: dict[str, tuple[list[str], list]] = {}

    def add(self, rel: str, crop: np.ndarray) -> Example | None:
        """The photo's Example when it is one of those shown, else None."""
        if len(self.examples) >= self.max_rows:
            return None
        folder = os.path.join(self.out_dir, "examples",
                              f"{len(self.examples):03d}_{safe_stem(rel)}")
        self.examples.append(Example(rel, folder, crop))
        return self.examples[-1]

    def section(self, title: str, columns: list[str], cells: list[tuple[str, str]]):
        """One row (image path, caption per column) of the table ``title``."""
        self.sections.setdefault(title, (columns, []))[1].append(cells)


def write_html(out_dir: str, report: dict, text: str, gallery: Gallery, pose_names, mode_label,
               failures):
    """index.html: the header lines of the report, the rotations of each example (one row
    per mode), the evaluators' sections, the report text and the failures."""
    page = HTMLPage(out_dir, f"Evaluation: {report['name']}")
    page.header(f"Evaluation of {report['name']} ({', '.join(report['modes'])}): "
                f"{report['photos']['evaluated']} photos")
    for line in text.splitlines()[1:4]:
        page.text(line)
    rows = []
    for ex in gallery.examples:
        for mode, row in ex.rows.items():
            cells = [(ex.source, f"{ex.rel} ({mode_label[mode]})")]
            for render_path, out_path, caption in row:
                paths = [out_path, render_path] if render_path else out_path
                label = "output (top), render (below): " if render_path else ""
                cells.append((paths, label + caption))
            rows.append(cells)
    if rows:
        page.header("Rotations (requested yaw; captions: the re-fitted yaw and the identity "
                    "distance to the source)")
        page.table(["source"] + list(pose_names), rows, width=128)
    for title, (columns, section_rows) in gallery.sections.items():
        page.header(title)
        page.table(columns, section_rows, width=160)
    page.header("Report")
    with page.doc:
        from dominate.tags import pre

        pre(text)
    if failures:
        page.text("Failed: " + "; ".join(f"{r} ({why})" for r, why in failures[:50]))
    page.save()
