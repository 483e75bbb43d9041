"""Headless Chromium for the tests that look at pages (DVC plots, the MLflow UI).

Install on Debian: ``apt-get update && apt-get install -y --no-install-recommends chromium``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)  # fmt: skip
# Resolve no host name at all: a page that tries to load anything from the internet gets nothing.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chromium() -> str:
    """The Chromium binary, or skip the test saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip(f"needs headless Chromium, not installed here; install it with: {INSTALL}")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def dump_dom(url: str, budget_ms: int = 15_000, size: str = "1600,1000", offline: bool = True) -> str:
    """The DOM after the page's scripts ran for ``budget_ms`` of virtual time."""
    extra = [OFFLINE] if offline else []
    done = _run(
        [*extra, f"--window-size={size}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url], 120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, path: Path, budget_ms: int = 15_000, size: str = "1600,1000") -> Path:
    """A PNG of the page after ``budget_ms`` of virtual time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        OFFLINE,
        f"--window-size={size}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={path}",
        url,
    ]
    done = _run(args, 120)
    assert done.returncode == 0 and path.is_file(), done.stderr[-2000:]
    return path


def text_of(dom: str) -> str:
    """The visible text of a DOM dump, whitespace collapsed."""
    import html
    import re

    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))).strip()
