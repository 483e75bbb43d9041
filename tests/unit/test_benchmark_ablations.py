"""Ablation tables: the paper's rows as valid params overrides, row folders, reports, the untrained fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fluxir.benchmark import ablations as ab
from fluxir.config import apply_override, config_from_dict
from fluxir.experiments import variants


def test_table2_rows_are_the_papers_ranks_with_its_numbers():
    t2 = ab.TABLES["table2"]
    assert [v.label for v in t2.variants] == ["16", "32", "64", "128", "Full"]
    assert [v.overrides["train.rank"] for v in t2.variants] == [16, 32, 64, 128, None]
    assert t2.variants[1].paper == (0.5639, 70.78, 0.6314) and t2.variants[4].paper_params == "387M + 1076.2M"
    assert ab.TABLE7_PAPER["FluxGen (ours)"] == (0.7295, 75.37, 0.6962)


@pytest.mark.parametrize("key", sorted(ab.TABLES))
def test_every_row_is_a_valid_override_of_the_params(key):
    for variant in ab.TABLES[key].variants:
        raw: dict = {}
        for dotted, value in variant.overrides.items():
            apply_override(raw, dotted, value)
        cfg = config_from_dict(raw)  # raises ConfigError on an unknown key or bad value
        for dotted, value in variant.overrides.items():
            section, name = dotted.split(".")
            assert getattr(getattr(cfg, section), name) == value


def test_each_row_works_in_its_own_folder_and_scores_only_fluxir(tmp_path):
    cfg = config_from_dict({})
    dataset = variants.pick_dataset(cfg)
    overrides = variants.variant_overrides(cfg, ab.TABLES["table4"], tmp_path / "row", dataset)
    for key in ("train.out_dir", "train.report_dir", "benchmark.adapter", "benchmark.out_dir",
                "benchmark.report_dir", "generate.out_dir", "score.out_dir", "filter.out_dir", "degrade.out_dir"):  # fmt: skip
        assert Path(overrides[key]).is_relative_to(tmp_path / "row"), key
    assert overrides["benchmark.methods"] == ["fluxir"] and overrides["train.track"] is False
    assert overrides["benchmark.datasets"] == [dataset] and dataset["name"] == "DIV2K-Val"
    assert "generate.out_dir" not in variants.variant_overrides(cfg, ab.TABLES["table2"], tmp_path, dataset)
    with pytest.raises(ValueError, match="ablate.dataset='RealLQ250': not a benchmark.datasets name"):
        variants.pick_dataset(config_from_dict({"ablate": {"dataset": "RealLQ250"}}))


def test_markdown_marks_our_best_and_puts_the_paper_beside_it():
    rows = [
        {"label": "16", "ours": {"psnr": 10.0, "piqe": 30.0}, "params": {"without_se": 82272, "se": 4288},
         "paper": [0.5389, 69.72, 0.6222], "paper_params": "387M + 11.6M", "status": "trained 2 steps"},
        {"label": "32", "ours": {"psnr": 12.0, "piqe": 40.0}, "params": {"without_se": 82272, "se": 8448},
         "paper": [0.5639, 70.78, 0.6314], "paper_params": "387M + 22.8M", "status": "trained 2 steps"},
        {"label": "64", "ours": {}, "params": None, "paper": [0.5529, 70.37, 0.6306], "paper_params": "387M + 45.2M",
         "status": "not run: FileNotFoundError: x"},
    ]  # fmt: skip
    md = ab.markdown(
        "T", "Rank", rows, [("psnr", "PSNR ↑", False), ("piqe", "PIQE ↓", True)], ["tiny"], [], True
    )
    lines = md.splitlines()
    assert lines[4] == (
        "| Rank | PSNR ↑ (ours) | PIQE ↓ (ours) | # Params (ours) | CLIPIQA ↑ (paper) | MUSIQ ↑ (paper) | "
        "MANIQA ↑ (paper) | # Params (paper) | status |"
    )
    assert (
        lines[6]
        == "| 16 | <u>10.00</u> | **30.00** | 82.27k + 4.29k | 0.5389 | 69.72 | 0.6222 | 387M + 11.6M | trained 2 steps |"
    )
    assert lines[7].startswith("| 32 | **12.00** | <u>40.00</u> | 82.27k + 8.45k | 0.5639")
    assert lines[8].startswith("| 64 | - | - | - | 0.5529")
    assert ab.count_text(22_773_504) == "22.8M" and ab.count_text(512) == "512"
    assert ab.slug("w/o L_P and w/o f(u)") == "w_o_L_P_and_w_o_f_u"


def test_without_a_trainer_the_initial_adapter_is_benchmarked_and_labelled(
    tmp_path, tiny_model_dir, monkeypatch
):
    from fluxir.models.adapter import FluxIRAdapter, count_parameters
    from fluxir.models.flux import load_flux

    monkeypatch.setitem(sys.modules, "fluxir.train.trainer", None)  # import fails: not importable yet
    monkeypatch.setitem(sys.modules, "fluxir.train.build", None)
    cfg = config_from_dict({
        "model": {"tiny_dir": str(tiny_model_dir)},
        "train": {"rank": 16},
        "benchmark": {"adapter": str(tmp_path / "adapter")},
    })  # fmt: skip
    result = variants.train_adapter(cfg)
    assert result["status"].startswith("not trained: the trainer is not importable")
    counts = variants.adapter_counts(tmp_path / "adapter")
    expected = count_parameters(FluxIRAdapter.from_flux(load_flux(tiny_model_dir).transformer, rank=16))
    assert counts == expected
    assert counts["se"] == 2 * 2 * (
        32 * 16 + 16 + 16 * 32 + 32
    )  # 2 streams x 2 blocks x (W_s, B_s, W_e, B_e)
