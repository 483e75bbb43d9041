"""Drive headless Chromium through the DevTools protocol, for pages that need clicks and uploads.

``headless.py``'s command-line modes (--dump-dom, --screenshot) only load a page; a page that must be used
(upload a file, press a button, wait for an answer) needs the DevTools protocol. This is the small part
of it the tests use, over one WebSocket (``websockets``, already installed with Gradio and Prefect):
navigate, evaluate JavaScript, set the files of an ``<input type=file>``, screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from headless import FLAGS, OFFLINE, chromium

from fluxir.net import free_port


class Page:
    """One Chromium tab; use as a context manager (``with Page() as page:``), which starts and stops Chromium."""

    def __init__(self, size: str = "1400,1800"):
        self.size = size
        self._ids = itertools.count(1)

    def __enter__(self) -> Page:
        from websockets.sync.client import connect

        # Chromium's helper processes (crashpad, GPU) can still be writing the profile for a moment after the
        # browser exits, so removing it may race them on a loaded machine: a leftover temp folder is harmless.
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-cdp-", ignore_cleanup_errors=True)
        port = free_port()
        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, OFFLINE, f"--window-size={self.size}", f"--user-data-dir={self._profile.name}",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError("Chromium's DevTools endpoint did not come up")
            time.sleep(0.2)
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._profile.cleanup()

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result (events arriving meanwhile are skipped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", timeout=60)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 120, every: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for: {expression}")
            time.sleep(every)

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in the ``<input type=file>`` matched by ``selector`` (fires its change event)."""
        root = self.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise LookupError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
