"""`fluxir params`: Table 2's parameter counts at FLUX.1-dev shapes, built on the meta device."""

from __future__ import annotations

import json

import pytest

from fluxir.cli import main
from fluxir.models.adapter import FluxIRAdapter, count_parameters
from fluxir.models.tiny import build_tiny_pipeline


def params_json(capsys, *args: str) -> dict:
    assert main(["params", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_flux_dev_all_ranks_reproduce_table2(capsys):
    report = params_json(capsys, "--base", "flux-dev", "--all-ranks")
    assert report["base"] == "flux-dev"
    assert report["base_parameters"] == 11_901_408_320  # FLUX.1-dev transformer, about 12B
    rows = {row["rank"]: row for row in report["rows"]}
    assert list(rows) == [16, 32, 64, 128, "full"]
    table2_se_m = {16: 11.6, 32: 22.8, 64: 45.2, 128: 90.0, "full": 1076.2}
    for rank, row in rows.items():
        assert abs(row["without_se"] / 1e6 - 387.0) <= 0.5, rank
        assert abs(row["se"] / 1e6 - table2_se_m[rank]) <= 0.1, rank
        assert row["total"] == row["without_se"] + row["se"]
        assert (row["paper_without_se_M"], row["paper_se_M"]) == (387.0, table2_se_m[rank])
    # DESIGN.md breakdown: block 339,831,296 + x_embedder 199,680 + context_embedder 12,585,984
    # + time_text_embed 32,262,144 + theta_p 2,097,152 + theta_y 768, plus M_i = Linear(64, 64).
    assert rows[32]["without_se"] == 386_977_024 + 64 * 64 + 64
    assert rows[32]["se"] == 2 * 57 * (3072 * 32 + 32 + 32 * 3072 + 3072)  # paper's check, 22.77M
    assert rows["full"]["se"] == 2 * 57 * (3072 * 3072 + 3072)


def test_ablation_variants_at_flux_dev_shape(capsys):
    single = params_json(capsys, "--control", "single_mlp")["rows"]
    assert [(r["rank"], r["se"], r["paper_se_M"]) for r in single] == [
        ("full", 2 * (3072 * 3072 + 3072), None)
    ]
    no_text = params_json(capsys, "--rank", "32", "--no-text-control")["rows"][0]
    assert no_text["se"] == 57 * (3072 * 32 + 32 + 32 * 3072 + 3072)
    no_theta = params_json(capsys, "--no-learnable-embeddings")["rows"][0]
    assert no_theta["without_se"] == 386_977_024 + 64 * 64 + 64 - 512 * 4096 - 768


def test_local_folder_matches_in_memory_adapter(capsys, tmp_path):
    transformer = build_tiny_pipeline(seed=0).transformer
    transformer.save_config(tmp_path / "pipe" / "transformer")  # a pipeline folder: transformer/config.json
    transformer.save_config(tmp_path / "transformer_only")  # a transformer folder: config.json
    expected = count_parameters(FluxIRAdapter.from_flux(transformer, rank=16))
    for folder in ("pipe", "transformer_only"):
        report = params_json(capsys, "--base", str(tmp_path / folder), "--rank", "16")
        row = report["rows"][0]
        assert {k: row[k] for k in expected} == expected
        assert row["paper_se_M"] is None  # Table 2 applies to FLUX.1-dev shapes only
        assert report["base_parameters"] == sum(p.numel() for p in transformer.parameters())


def test_table_output_shows_paper_values(capsys):
    assert main(["params", "--rank", "full"]) == 0
    out = capsys.readouterr().out
    assert "19 double + 38 single blocks" in out
    assert out.splitlines()[-1].split() == ["full", "386.98", "387", "1076.19", "1076.2", "1463.17"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--base", "/no/such/folder"],
            "expected 'flux-dev', 'tiny', or a folder holding transformer/config.json",
        ),
        (["--control", "single_mlp", "--all-ranks"], "'single_mlp' is one full-rank MLP and has no rank"),
    ],
)
def test_user_errors_are_one_line(capsys, args, message):
    assert main(["params", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fluxir params: error: ") and message in err


def test_rank_must_be_positive_or_full(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["params", "--rank", "0"])
    assert exc.value.code == 2
    assert "a positive integer or 'full'" in capsys.readouterr().err
