"""Small helpers shared by the test modules (importable because pytest puts tests/ on the
path)."""

from __future__ import annotations

import html.parser


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def page_links(path) -> list[str]:
    """Every src/href of an HTML page, as written (relative paths stay relative)."""
    parser = _Links()
    with open(path) as f:
        parser.feed(f.read())
    return parser.links
