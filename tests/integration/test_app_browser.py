"""The web page (`fluxir app`) used in headless Chromium, started the way `FLUXIR_APP=1 make services` does.

Upload a photo, press Restore, wait for the before/after slider and the download, check the output's size
(64x64 in, 256x256 out); upload a corrupt file and read the message on the page; the server answers
before, between and after. Tiny base, zero-initialised adapter, 2 steps. Screenshots: reports/app/.
"""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cdp import Page
from headless import chromium
from PIL import Image

from fluxir.net import http_status

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "reports" / "app"
STATUS = "document.querySelector('#status').innerText"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_model_dir):
    """`fluxir app` as the optional service `app` of a project with a tiny base and a zero-init adapter."""
    import yaml

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux
    from fluxir.orchestration import services

    chromium()  # skip before starting anything when there is no browser
    project = tmp_path_factory.mktemp("app-project")
    adapter = project / "adapter"
    FluxIRAdapter.from_flux(
        load_flux(tiny_model_dir).transformer, rank=4, max_sequence_length=32
    ).save_pretrained(adapter)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"].update(tiny_dir=str(tiny_model_dir), max_sequence_length=32, device="cpu")
    raw["restore"]["steps"] = 2
    raw["benchmark"]["adapter"] = str(adapter)
    raw["tracking"]["uri"] = f"sqlite:///{project / 'mlruns.db'}"
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = services.start(project, fixed_ports=False, only=["app"], app=True, timeout=240, echo=lambda _: None)
    try:
        yield env["FLUXIR_APP_URL"]
    finally:
        outcome = services.stop(project, echo=lambda _: None)
        assert outcome == {"app": "terminated"} or set(outcome.values()) <= {"terminated", "killed"}, outcome


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    root = tmp_path_factory.mktemp("uploads")
    photo = root / "astronaut-64.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:164, 180:244])).save(photo)
    broken = bytearray(photo.read_bytes())
    broken[len(broken) // 2] ^= 0xFF  # a flipped byte inside the compressed pixel data
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(bytes(broken))
    return {"photo": photo, "corrupt": corrupt}


def test_upload_restore_download_then_a_corrupt_upload(app_url, files):
    assert http_status(app_url, 10) == 200
    with Page() as page:
        page.goto(app_url)
        page.wait("!!document.querySelector('#upload input[type=file]')", timeout=90)
        page.set_files("#upload input[type=file]", files["photo"])
        page.wait(f"{STATUS}.includes('ready')", timeout=60)
        page.screenshot(SHOTS / "uploaded.png")

        page.js("document.querySelector('#restore-button').click()")
        status = page.wait(f"{STATUS}.includes('Restored') && {STATUS}", timeout=240)
        assert "64x64 -> 256x256" in status, status
        sizes = page.wait(
            "(() => { const s = [...document.querySelectorAll('#result img')]"
            ".filter(i => i.complete && i.naturalWidth).map(i => [i.naturalWidth, i.naturalHeight]);"
            " return s.length === 2 && s; })()",
            timeout=30,
        )
        assert sizes == [[256, 256], [256, 256]], "the slider holds the bicubic upscale and the restoration"
        href = page.wait(
            "document.querySelector('#download a') && document.querySelector('#download a').href"
        )
        page.screenshot(SHOTS / "restored.png")
        with urllib.request.urlopen(href, timeout=30) as response:
            downloaded = Image.open(io.BytesIO(response.read()))
        assert downloaded.format == "PNG" and downloaded.size == (256, 256)

        page.js("document.querySelector('#upload button[aria-label=Clear]').click()")
        page.wait("!!document.querySelector('#upload input[type=file]')", timeout=30)
        page.set_files("#upload input[type=file]", files["corrupt"])
        status = page.wait(f"{STATUS}.includes('Cannot restore') && {STATUS}", timeout=60)
        assert "corrupt.png" in status and "corrupt" in status.split("corrupt.png", 1)[1], status
        toasts = page.wait("[...document.querySelectorAll('[data-testid=toast-body]')].map(e => e.innerText)")
        assert any("corrupt.png" in t for t in toasts), toasts
        assert page.js("document.querySelectorAll('#result img').length") == 0, "the old result is cleared"
        page.screenshot(SHOTS / "corrupt.png")

    assert http_status(app_url, 10) == 200, "the server keeps serving after a bad upload"
