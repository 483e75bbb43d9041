"""No credential of a URI reaches a printed line, a log line or a recorded value."""

from __future__ import annotations

import logging
import os

import pytest

from fluxir.errors import RedactFilter, UserError, redact, report
from fluxir.tracking.runs import param_value

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "text",
    [
        f"http://bob:{SECRET}@mlflow.example:5000",
        f"tracking at https://bob:{SECRET}@h/api/2.0 failed",
        f"postgresql+psycopg://u:{SECRET}@db:5432/mlflow",
        f"http://h:5000/api?x=1&token={SECRET}",
        f"s3://bucket/key?X-Amz-Signature={SECRET}",
    ],
)
def test_redact_masks_every_kind_of_url_credential(text: str) -> None:
    masked = redact(text)
    assert SECRET not in masked and "***" in masked


def test_plain_text_and_uris_without_credentials_are_kept() -> None:
    for text in ("sqlite:///mlruns.db", "http://127.0.0.1:5000/", "at 12:30 bob@host", "data/a:b@c"):
        assert redact(text) == text


def test_error_lines_and_recorded_params_are_redacted(capsys) -> None:
    report("train", UserError(f"no MLflow server answers at http://bob:{SECRET}@h:1"))
    err = capsys.readouterr().err
    assert SECRET not in err and "http://bob:***@h:1" in err
    assert SECRET not in param_value(f"http://bob:{SECRET}@h:1")


def test_the_stages_log_handler_redacts(capsys) -> None:
    from fluxir.stages import setup_logging

    setup_logging()
    handler = logging.getLogger("fluxir").handlers[0]
    assert any(isinstance(f, RedactFilter) for f in handler.filters)
    logging.getLogger("fluxir.stages.train").warning("tracking at %s", f"http://bob:{SECRET}@h:1")
    assert SECRET not in capsys.readouterr().err


def test_an_unreachable_server_with_a_password_is_named_without_it(tmp_path, monkeypatch, caplog):
    from fluxir.config import Config, TrackingConfig
    from fluxir.net import free_port
    from fluxir.tracking import lineage

    port = free_port()  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:{SECRET}@127.0.0.1:{port}")
    monkeypatch.setenv(lineage.PARENT_ENV, "0" * 32)
    untracked = Config(tracking=TrackingConfig(required=False))  # warn and go on (required: test_tracking)
    with caplog.at_level("INFO", logger="fluxir"):
        with lineage.stage_run("degrade", untracked, root=tmp_path) as run_id:
            assert run_id is None
    assert "no MLflow server answers" in caplog.text and SECRET not in caplog.text


def test_mlflow_http_requests_are_bounded_unless_the_user_chose(monkeypatch) -> None:
    from fluxir.tracking import runs

    for key in runs.HTTP_LIMITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    runs.tracking_uri("http://127.0.0.1:1")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # the user's own value is kept
