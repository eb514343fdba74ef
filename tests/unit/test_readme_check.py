"""The CI check that the README's quickstart figures are the ones the run produced."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _check():
    spec = importlib.util.spec_from_file_location("check_readme", REPO / ".ci" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


SUMMARY = """Machine: AMD EPYC, no native bf16.

| method | PSNR (dB) | SSIM |
|---|---:|---:|
| inpnet_s | 21.34 | 0.711 |
| telea (reference) | 22.87 | 0.784 |

PSNR (dB) by hole ratio, pattern `free_form`:

| method | 0.10 | 0.30 |
|---|---:|---:|
| inpnet_s | 30.10 | 22.00 |
| telea (reference) | 30.37 | 22.61 |
"""


def _files(tmp_path: Path, readme_summary: str, run_summary: str = SUMMARY) -> list[str]:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\ntext 12.5 dB outside\n\n<!-- summary:start -->\n{readme_summary}<!-- summary:end -->\n")
    (tmp_path / "summary.md").write_text(run_summary)
    return [str(readme), str(tmp_path / "summary.md")]


def test_same_figures_pass_and_noise_is_tolerated(tmp_path: Path) -> None:
    assert _check()(_files(tmp_path, SUMMARY)) == 0
    assert _check()(_files(tmp_path, SUMMARY.replace("22.00", "22.20"))) == 0  # within 0.3 dB


@pytest.mark.parametrize("edit", [("22.00", "23.00"), ("| telea (reference) | 30.37 | 22.61 |\n", "")])
def test_a_changed_or_missing_cell_on_the_same_cpu_fails(
    tmp_path: Path, edit: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check()(_files(tmp_path, SUMMARY.replace(*edit))) == 1
    assert "free_form" in capsys.readouterr().out


def test_another_cpu_kind_reports_but_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = SUMMARY.replace("AMD EPYC, no native bf16", "Intel Xeon, amx_bf16, avx512_bf16").replace("22.00", "24.00")
    assert _check()(_files(tmp_path, SUMMARY, other)) == 0
    assert "a CPU kind the README has no figures for" in capsys.readouterr().out


def test_readme_without_the_section_fails(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# no summary here\n")
    (tmp_path / "summary.md").write_text(SUMMARY)
    assert _check()([str(tmp_path / "README.md"), str(tmp_path / "summary.md")]) == 1


def test_a_difference_cell_is_checked_by_its_leading_number(tmp_path: Path) -> None:
    diff = SUMMARY + (
        "\nPaired differences, pattern `free_form`:\n\n| difference | all |\n|---|---:|\n"
        "| inpnet_s - telea | +0.74 [+0.62, +0.85] **ahead** |\n"
    )
    assert _check()(_files(tmp_path, diff, diff)) == 0
    assert _check()(_files(tmp_path, diff.replace("+0.74 [", "-0.74 ["), diff)) == 1


def test_each_machine_is_checked_against_its_own_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bf16 = SUMMARY.replace("no native bf16.", "avx512_bf16; trained in bf16.").replace("22.00", "22.90")
    readme = tmp_path / "README.md"
    blocks = "".join(f"<!-- summary:start -->\n{b}<!-- summary:end -->\n\nprose\n\n" for b in (SUMMARY, bf16))
    readme.write_text(f"# x\n\n{blocks}")
    run = tmp_path / "summary.md"
    run.write_text(bf16)
    assert _check()([str(readme), str(run)]) == 0  # the bf16 copy, not the first one
    run.write_text(bf16.replace("22.90", "22.00"))  # the fp32 machine's figure on the bf16 machine
    assert _check()([str(readme), str(run)]) == 1
    assert "avx512_bf16; trained in bf16" in capsys.readouterr().err
    run.write_text(SUMMARY)
    assert _check()([str(readme), str(run)]) == 0


def test_the_machine_line_is_not_a_table_heading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first table is keyed by its own heading, not the Machine: line above it, so another
    machine's figures are compared cell by cell, not reported as all missing."""
    other = SUMMARY.replace("AMD EPYC, no native bf16", "Intel Xeon, amx_bf16").replace("21.34", "21.50")
    assert _check()(_files(tmp_path, SUMMARY, other)) == 0
    out = capsys.readouterr().out
    assert "1 beyond" not in out and "0 beyond" in out
