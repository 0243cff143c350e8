"""The dashboard's seeds and significance section, from a fake sweep of 2 variants × 2 seeds."""

from __future__ import annotations

import html

from seq2seq.dashboard.build import build_dashboard
from seq2seq.dashboard.runs import load_runs
from seq2seq.dashboard.seeds import significance_table, variant_table
from seq2seq.evaluation.record import RunRecord
from seq2seq.evaluation.seeds import spread
from tests.test_significance import corpus, write_run


def sweep_2x2(tmp_path):
    sources, refs, good, poor = corpus()
    mid = [g if i % 3 else p for i, (g, p) in enumerate(zip(good, poor, strict=True))]
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", "none", sources, refs, poor, seed=1)
    write_run(sweep / "1", "none", sources, refs, mid, seed=2)
    write_run(sweep / "2", "bahdanau", sources, refs, good, seed=1)
    write_run(sweep / "3", "bahdanau", sources, refs, poor, seed=2)
    return sweep


def test_variants_show_mean_spread_and_seed_count_and_jobs_are_tested_against_the_same_seed(tmp_path):
    sweep = sweep_2x2(tmp_path)
    runs = load_runs(sweep)
    columns, rows = variant_table(runs)
    assert columns[2] == "test BLEU: mean ± sample sd (min–max, seeds)"
    none = [RunRecord.read(sweep / j).metrics["test/bleu"] for j in ("0", "1")]
    assert rows[0][:3] == ["gru + none, h=32", "2: 1, 2", spread(none).text()]
    assert rows[1][1] == "2: 1, 2" and "2 seeds" in rows[1][2]
    baseline, columns, rows = significance_table(runs, n_bootstrap=100, n_trials=200)
    assert baseline == "gru + none, h=32" and columns[-2:] == ["p bootstrap", "p AR"]
    by_job = {row[0]: row for row in rows}
    assert set(by_job) == {"2", "3"} and by_job["2"][3] == "0" and by_job["3"][3] == "1"
    assert float(by_job["2"][4]) > 20 and float(by_job["2"][6]) < 0.01  # good vs poor, seed 1
    assert float(by_job["3"][4]) < 0  # poor (seed 2) vs mid (seed 2)


def test_the_page_has_the_seeds_section_and_its_figure(tmp_path):
    sweep = sweep_2x2(tmp_path)
    page = (build_dashboard(sweep)).read_text()
    assert '<section id="seeds"><h2>Seeds and significance</h2>' in page
    assert html.escape("mean ± sample sd (min–max, seeds)") in page and "p AR" in page
    assert (sweep / "dashboard" / "bleu_by_length_seeds.png").stat().st_size > 1000
    assert "mean over each variant&#x27;s seeds" in page


def test_no_seed_figure_with_one_seed_per_variant(tmp_path):
    sources, refs, good, poor = corpus()
    write_run(tmp_path / "s" / "0", "none", sources, refs, poor, seed=1)
    page = build_dashboard(tmp_path / "s").read_text()
    assert "Seeds and significance" not in page


def test_the_baseline_is_chosen_on_the_command_line(tmp_path, capsys):
    from seq2seq.dashboard.cli import main

    sweep = sweep_2x2(tmp_path)
    baseline, _, rows = significance_table(load_runs(sweep), n_bootstrap=100, n_trials=200, baseline="3")
    assert baseline == "gru + bahdanau, h=32" and {row[0] for row in rows} == {"0", "1"}
    assert {row[3] for row in rows} == {
        "2",
        "3",
    }  # none seed 1 against bahdanau seed 1 (job 2), seed 2 against 3
    assert main([f"sweep_dir={sweep}", "baseline=7"]) == 2
    assert "baseline=7: no completed job of that name" in capsys.readouterr().err
