"""`dvc plots show` works offline: the repository's .dvc/config points at a page with Vega inlined."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from headless import dump_dom

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"


class _Refs(HTMLParser):
    """Every URL the page would fetch: script/img/iframe src, link href."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.refs.append(a["src"] or "")
        elif tag == "script":
            self.inline_scripts += 1
        if tag == "link" and a.get("href"):
            self.refs.append(a["href"] or "")


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc plots show` in a copy of the project's plot setup (dvc.yaml plots, .dvc/config, a CSV)."""
    root = tmp_path_factory.mktemp("plots")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q", "--no-scm"], cwd=root, check=True)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    csv = root / "reports" / "filter" / "hist_piqe.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("bin_center,count\n" + "".join(f"{5 + 10 * i},{(i * 7) % 5 + 1}\n" for i in range(10)))
    plots = (REPO / "dvc.yaml").read_text().split("\nplots:", 1)[1]
    (root / "dvc.yaml").write_text("stages: {}\nplots:" + plots)
    done = subprocess.run(
        [*dvc, "plots", "show", "-o", "out"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return root / "out" / "index.html"


def test_template_is_configured_and_inlines_vega():
    assert "html_template = plots/offline.html" in (REPO / ".dvc" / "config").read_text()
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # {scripts} is where DVC puts its CDN tags
    for lib in ("vega@5.", "vega-lite@5.", "vega-embed@6."):
        assert lib in page
    licence = (REPO / ".dvc" / "plots" / "VEGA-LICENSE.txt").read_text()
    assert "BSD 3-Clause" in licence and "Redistributions of source code must retain" in licence


def test_page_references_no_remote_url(plots_page):
    html = plots_page.read_text()
    refs = _Refs()
    refs.feed(html)
    assert refs.refs == [], f"the page would load {refs.refs}"
    assert refs.inline_scripts >= 4  # vega, vega-lite, vega-embed, the plot
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "cdn.jsdelivr" not in html and "bin_center" in html


@pytest.mark.slow
def test_page_renders_with_no_network(plots_page):
    dom = dump_dom(plots_page.as_uri(), budget_ms=5_000)
    assert re.search(r'<canvas[^>]*class="marks"|<svg[^>]*class="marks"', dom), "Vega drew no chart"
    assert "vega-embed" in dom
