"""Shared fixtures: the tiny FLUX model, real photos from scikit-image, and a folder of awkward files."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")

# The modules that use the session's services (integration/conftest.py: `make services` and one flow run,
# minutes of work). `make test` runs two pytest-xdist workers; these modules go to one of them together, so
# the services start and the flow runs once.
SHARED_SERVICES_MODULES = frozenset(
    f"tests/integration/{name}.py" for name in ("test_mlflow_ui", "test_prefect_flow", "test_services")
)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown (and unused) when it is not loaded
def pytest_xdist_make_scheduler(config, log):
    """Every test is its own unit of work (as ``--dist load``), except SHARED_SERVICES_MODULES: one unit.

    xdist's ``--dist loadgroup`` would do this from a mark, but it silently stops grouping on pytest 9.2
    (it renames node ids through a field pytest no longer reads: pytest-xdist issue 1386).
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedServicesOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "shared-services" if nodeid.split("::")[0] in SHARED_SERVICES_MODULES else nodeid

    return SharedServicesOnOneWorker(config, log)


@pytest.fixture(autouse=True)
def mlflow_state_stays_in_its_test():
    """MLflow keeps the tracking URI and the active experiment id in module globals and exports both to
    the environment; a test that starts a run would otherwise hand its experiment id (valid only in its
    own database) to every later test. Put the environment and the globals back after each test."""
    saved = {name: os.environ.get(name) for name in _MLFLOW_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow" in sys.modules:
        import mlflow.tracking._tracking_service.utils as tracking_utils
        import mlflow.tracking.fluent as fluent

        fluent._active_experiment_id = None
        tracking_utils._tracking_uri = None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight FLUX pipeline (seed 0) saved in diffusers format, once per session."""
    from fluxir.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-flux", seed=0)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos shipped with scikit-image (sizes W x H), in nested folders, as PNG and JPEG."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    (root / "nature" / "cats").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(root / "astronaut.png")  # 512 x 512
    Image.fromarray(data.coffee()).save(root / "nature" / "coffee.jpg", quality=95)  # 600 x 400
    Image.fromarray(data.chelsea()).save(root / "nature" / "cats" / "chelsea.png")  # 451 x 300
    Image.fromarray(data.rocket()).save(root / "rocket.jpg", quality=95)  # 640 x 427
    return root


@pytest.fixture(scope="session")
def awkward_rgb() -> np.ndarray:
    """The 64 x 96 RGB crop of scikit-image's astronaut every file of ``awkward_dir`` is made from."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:164, 150:246])


def _encoded(rgb: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def awkward_dir(tmp_path_factory: pytest.TempPathFactory, awkward_rgb: np.ndarray) -> dict[str, Path]:
    """One file per awkward case a real photo folder holds (64 x 96 unless tiny); name -> path.

    Converted: cmyk.jpg, gray16.png, rgb16.png, rgba.png, gray.png, palette.png, good.png.
    Rejected:  corrupt.png, truncated.jpg, truncated.png, empty.png, text.png, tiny.png, zz-copy.png
    (same bytes as good.png).
    """
    import cv2

    root = tmp_path_factory.mktemp("awkward")
    rgb = awkward_rgb
    gray = (rgb.mean(axis=2)).astype(np.uint8)
    files: dict[str, bytes] = {}
    files["good.png"] = _encoded(rgb, "PNG")
    files["zz-copy.png"] = files["good.png"]
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=95)
    files["cmyk.jpg"] = buf.getvalue()
    files["gray.png"] = _encoded(gray, "PNG")
    files["palette.png"] = _encoded_palette(rgb)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 0  # left half transparent
    files["rgba.png"] = _encoded(np.dstack([rgb, alpha]), "PNG")
    ok, png16 = cv2.imencode(".png", gray.astype(np.uint16) * 257)
    files["gray16.png"] = png16.tobytes()
    ok, png48 = cv2.imencode(".png", (rgb.astype(np.uint16) * 257)[..., ::-1].copy())
    files["rgb16.png"] = png48.tobytes()
    corrupt = bytearray(files["good.png"])
    corrupt[len(corrupt) // 2] ^= 0xFF  # a flipped byte inside the compressed pixel data
    files["corrupt.png"] = bytes(corrupt)
    jpeg = _encoded(rgb, "JPEG", quality=95)
    files["truncated.jpg"] = jpeg[: len(jpeg) // 2]
    files["truncated.png"] = files["good.png"][: len(files["good.png"]) // 2]
    files["empty.png"] = b""
    files["text.png"] = b"this is a text file, not a PNG\n"
    files["tiny.png"] = _encoded(rgb[:20, :30], "PNG")
    paths = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    return paths


def _encoded_palette(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).quantize(colors=64).save(buf, format="PNG")
    return buf.getvalue()
