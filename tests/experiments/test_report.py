"""The report: the table's statistics equal scipy's on known vectors, percent scaling, missing
and single-seed cells, restricted workers, the baseline table."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy import stats

from ssmd import experiments as ex


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon"])
def test_table_statistics_equal_scipy(
    tmp_path: Path,
    test: str,
    write_experiment: Callable[..., Path],
    write_results: Callable[..., None],
) -> None:
    exp = ex.load_experiment(
        write_experiment(tmp_path, ratios=[0.1], seeds=[0, 1, 2, 3, 4, 5], test=test, percent=False)
    )
    sup = [0.40, 0.42, 0.39, 0.41, 0.43, 0.40]
    ssmd = [0.52, 0.50, 0.55, 0.49, 0.51, 0.56]
    full = [0.76, 0.77, 0.75, 0.78, 0.76, 0.77]
    write_results(exp, {"Supervised": sup, "SSMD w/o ACC": ssmd})
    write_results(exp, {"Fully-supervised": full}, ratio=1.0)
    summary = ex.write_report(exp)
    entry = summary["metrics"]["AP"]["0.1"]
    assert (
        entry["best"] == "SSMD w/o ACC" and entry["second"] == "Supervised"
    )  # reference not ranked
    ref = stats.ttest_rel(ssmd, sup) if test == "paired_t" else stats.wilcoxon(ssmd, sup)
    assert entry["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert entry["gain"] == pytest.approx(sum(ssmd) / 6 - sum(sup) / 6)
    table = (exp.output_dir / "table.md").read_text()
    assert f"**{sum(ssmd) / 6:.3f} ±" in table and f"+{entry['gain']:.3f}" in table
    assert f"{float(ref.pvalue):.4f}" in table
    assert ("paired t-test" if test == "paired_t" else "Wilcoxon") in table
    assert "Fully-supervised" in table and f"{sum(full) / 6:.3f}" in table
    assert "| 10% |" in table


def test_percent_scaling_and_missing_cells(
    tmp_path: Path, write_experiment: Callable[..., Path], write_results: Callable[..., None]
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    write_results(exp, {"Supervised": [0.4, 0.5]})
    summary = ex.write_report(exp)
    cell = summary["metrics"]["AP"]["0.1"]["cells"]["Supervised"]
    assert cell["mean"] == pytest.approx(45.0) and cell["n"] == 2
    table = (exp.output_dir / "table.md").read_text()
    assert "45.0 ± 7.1" in table and "—" in table and "Finished cells: 2/10" in table


def test_single_seed_cell_shows_no_spread(
    tmp_path: Path, write_experiment: Callable[..., Path], write_results: Callable[..., None]
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1], seeds=[0, 1]))
    write_results(exp, {"Supervised": [0.4, 0.5], "SSMD w/o ACC": [0.3, 0.6]})
    spec = next(m for m in exp.methods if m.label == "SSMD w/o ACC")
    shutil.rmtree(exp.run_dir(ex.Cell(spec, 0.1, 1)))
    ex.write_report(exp)
    table = (exp.output_dir / "table.md").read_text()
    assert "| SSMD w/o ACC | 30.0 (n=1) |" in table  # a std of one value would read as 0.0
    assert "**45.0 ± 7.1** +15.0" in table and "n/a (< 2 paired seeds)" in table


def test_a_restricted_worker_reports_the_whole_file(
    tmp_path: Path, write_experiment: Callable[..., Path], write_results: Callable[..., None]
) -> None:
    full = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    write_results(full, {"Supervised": [0.4, 0.5]})
    write_results(full, {"SSMD w/o ACC": [0.3, 0.6]}, ratio=0.2)
    worker = full.restrict(ratios=[0.1], seeds=[0], rows=["Supervised"])
    assert [c.id for c in worker.cells()] == ["supervised__r0.1__s0"]
    ex.write_report(worker)  # what a worker writes after its cell
    table = (full.output_dir / "table.md").read_text()
    assert "| 10% | 20% |" in table and "seeds [0, 1]" in table
    assert "**45.0 ± 7.1**" in table and "**45.0 ± 21.2**" in table  # SSMD's 20% cell kept
    assert "Finished cells: 4/" in table


def test_baseline_row_difference_and_p_value_equal_scipy(
    tmp_path: Path, write_experiment: Callable[..., Path], write_results: Callable[..., None]
) -> None:
    methods = [
        {"label": "Supervised", "name": "supervised"},
        {"label": "CSD", "name": "csd"},
        {"label": "SSMD", "name": "ssmd"},
        {"label": "Fully-supervised", "name": "supervised", "ratios": [1.0], "reference": True},
    ]
    exp = ex.load_experiment(
        write_experiment(
            tmp_path, ratios=[0.1], seeds=[0, 1, 2], methods=methods, baseline="Supervised"
        )
    )
    sup, csd, ssmd = [0.30, 0.29, 0.32], [0.31, 0.29, 0.30], [0.20, 0.17, 0.18]
    write_results(exp, {"Supervised": sup, "CSD": csd, "SSMD": ssmd})
    spec = next(m for m in exp.methods if m.label == "CSD")
    shutil.rmtree(exp.run_dir(ex.Cell(spec, 0.1, 2)))  # CSD has seeds 0 and 1 only
    vs = ex.write_report(exp)["metrics"]["AP"]["0.1"]["vs_baseline"]
    assert set(vs) == {"CSD", "SSMD"}  # not the baseline itself, not the reference row
    p_ssmd = float(stats.ttest_rel(ssmd, sup).pvalue)
    p_csd = float(stats.ttest_rel(csd[:2], sup[:2]).pvalue)
    assert vs["SSMD"]["p_value"] == pytest.approx(p_ssmd, rel=1e-12)
    assert vs["CSD"]["p_value"] == pytest.approx(p_csd, rel=1e-12)
    assert vs["CSD"]["paired_seeds"] == [0, 1]
    assert vs["SSMD"]["diff"] == pytest.approx(100 * (sum(ssmd) - sum(sup)) / 3)
    table = (exp.output_dir / "table.md").read_text()
    assert "AP (x100) difference to Supervised:" in table
    assert f"| SSMD | {100 * (sum(ssmd) - sum(sup)) / 3:+.1f} (p = {p_ssmd:.4f}) |" in table
    # paired on CSD's seeds 0-1: +0.5, although the table's means differ by -0.3
    assert vs["CSD"]["diff"] == pytest.approx(100 * (0.30 - 0.295))
    assert f"| CSD | +0.5 (p = {p_csd:.4f}, n=2) |" in table
