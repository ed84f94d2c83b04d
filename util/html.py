"""Small HTML result pages with dominate (used by training, test.py and evaluation)."""

from __future__ import annotations

import os

import dominate
from dominate.tags import a, div, h3, img, p, table, td, th, tr

from face3d.fileio import atomic_write


class HTMLPage:
    """Rows of labelled images; ``save()`` writes ``<folder>/<filename>``. Image paths are
    written relative to the page, so the folder can be moved or zipped."""

    def __init__(self, folder: str, title: str, filename: str = "index.html", refresh: int = 0):
        self.folder, self.filename = folder, filename
        self.doc = dominate.document(title=title)
        if refresh:
            from dominate.tags import meta

            with self.doc.head:
                meta(http_equiv="refresh", content=str(refresh))
        os.makedirs(folder, exist_ok=True)

    def header(self, text: str):
        with self.doc:
            h3(text)

    def text(self, text: str):
        with self.doc:
            p(text)

    def table(self, columns: list[str], rows: list[list[tuple[str | None, str]]], width=256):
        """rows: lists of cells (image path, list of paths stacked top to bottom, or None;
        caption). Each image links to its file (a GIF shows animated and links to itself)."""
        with self.doc, table(border=1, style="table-layout: fixed; border-collapse: collapse"):
            with tr():
                for c in columns:
                    th(c)
            for row in rows:
                with tr():
                    for path, caption in row:
                        with td(style="text-align:center; vertical-align:top"):
                            for one in [path] if isinstance(path, str) else (path or []):
                                if one is None:
                                    continue
                                rel = os.path.relpath(one, self.folder)
                                with div(), a(href=rel):  # one per line: stacked
                                    img(src=rel, style=f"width:{width}px")
                            p(caption)

    def save(self) -> str:
        path = os.path.join(self.folder, self.filename)
        with atomic_write(path) as f:
            f.write(self.doc.render())
        return path
