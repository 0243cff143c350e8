"""Runs that differ only in their seed: grouping, mean and spread, in compare_runs and the dashboard."""

from __future__ import annotations

import pytest

from seq2seq.evaluation.record import RunRecord
from seq2seq.evaluation.seeds import group_by_seed, spread, variant_key
from tests.test_significance import compare, corpus, write_run


def record(attention: str, seed: int, bleu: float, data_seed: int = 0, out: str = "x") -> RunRecord:
    config = {
        "seed": seed,
        "data": {"seed": data_seed, "name": "toy"},
        "model": {"hidden_size": 32, "attention": {"name": attention}},
        "paths": {"output_dir": f"/runs/{out}/{attention}/{seed}"},
        "logger": {"group": out},
    }
    buckets = [
        {"bucket": "1-10", "n": 5, "bleu": bleu + 10},
        {"bucket": "11+", "n": 0, "bleu": None},
    ]
    return RunRecord(
        path=f"/runs/{attention}{seed}",
        status="completed",
        choices={"model/attention": attention, "model/encoder": "gru"},
        config=config,
        metrics={"test/bleu": bleu},
        bleu_by_length=buckets,
    )


def test_spread_gives_mean_sample_std_and_range():
    s = spread([30.0, 32.0, 37.0, None])
    assert s.n == 3 and s.mean == pytest.approx(33.0) and s.std == pytest.approx(3.605551, abs=1e-6)
    assert (s.low, s.high) == (30.0, 37.0)
    assert s.text() == "33.0 ± 3.6 sd (30.0–37.0, 3 seeds)"
    assert spread([40.0]).text() == "40.0 (1 seed)" and spread([None]) is None


def test_runs_differing_only_in_seed_form_one_group_and_data_seed_is_a_separate_axis():
    runs = [
        record("none", 1, 30.0, out="a"),
        record("bahdanau", 1, 50.0),
        record("none", 2, 32.0, out="b"),  # another output dir and W&B group: still the same variant
        record("bahdanau", 2, 54.0),
        record("none", 3, 37.0, data_seed=7),  # another data split: another variant unless pooled
    ]
    groups = group_by_seed(runs)
    assert [(g.runs[0].choices["model/attention"], g.seeds) for g in groups] == [
        ("none", ["1", "2"]),
        ("bahdanau", ["1", "2"]),
        ("none", ["3"]),
    ]
    assert groups[0].metric("test/bleu").mean == pytest.approx(31.0)
    buckets = groups[1].buckets()
    assert buckets[0]["bleu"].mean == pytest.approx(62.0) and buckets[0]["bleu"].n == 2
    assert buckets[1]["bleu"] is None  # empty in every seed
    pooled = group_by_seed(runs, axes=("seed", "data.seed"))
    assert [len(g.runs) for g in pooled] == [3, 2]
    assert pooled[0].seeds[2] == "seed=3, data.seed=7"
    assert variant_key(runs[0]) == variant_key(runs[2]) != variant_key(runs[4]) != variant_key(runs[1])
    with pytest.raises(ValueError, match="seed axis 'model.seed'"):
        group_by_seed(runs, axes=("model.seed",))


def test_compare_runs_shows_mean_and_spread_per_variant_and_pairs_seeds(tmp_path):
    sources, refs, good, poor = corpus()
    mid = [g if i % 3 else p for i, (g, p) in enumerate(zip(good, poor, strict=True))]
    runs = [
        write_run(tmp_path / "n1", "none", sources, refs, poor, seed=1),
        write_run(tmp_path / "n2", "none", sources, refs, mid, seed=2),
        write_run(tmp_path / "b1", "bahdanau", sources, refs, good, seed=1),
        write_run(tmp_path / "b2", "bahdanau", sources, refs, mid, seed=2),
    ]
    result = compare(*runs, "--resamples", "100", "--trials", "200")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| gru + none, h=32, teacher_forcing=always, seed=1 |" in out  # runs of one variant told apart
    seeds = out[out.index("Seeds:") : out.index("Paired tests")]
    assert "mean ± sample standard deviation (min–max, number of seeds)" in seeds
    bleus = {name: RunRecord.read(tmp_path / name).metrics["test/bleu"] for name in ("b1", "b2")}
    expected = spread(list(bleus.values())).text()
    assert f"| gru + bahdanau, h=32, teacher_forcing=always | 1, 2 | {expected} |" in seeds
    assert "| 1-10 | 40 |" in seeds and "2 seeds" in seeds.split("| 1-10 | 40 |")[1].splitlines()[0]
    tests = out[out.index("Paired tests") :].splitlines()
    # bahdanau seed 2 is tested against none seed 2 (the same hypotheses: Δ 0, p 1)
    row = next(
        line for line in tests if line.startswith("| gru + bahdanau, h=32, teacher_forcing=always, seed=2")
    )
    assert (
        "| gru + none, h=32, teacher_forcing=always, seed=2 | " in row and "| +0.0 | 1.000 | 1.000 |" in row
    )


def test_an_option_left_off_groups_with_a_run_from_before_it_existed():
    """A run made before ``eval.attention_heads`` existed and one with it false are one variant; true is not."""
    old, new, on = record("none", 1, 19.0), record("none", 2, 19.5), record("none", 3, 20.0)
    new.config["eval"] = {"attention_heads": False, "bootstrap": 1000}
    old.config["eval"] = {"bootstrap": 1000}
    on.config["eval"] = {"attention_heads": True, "bootstrap": 1000}
    groups = group_by_seed([old, new, on])
    assert [g.seeds for g in groups] == [["1", "2"], ["3"]]
    new.config["eval"]["bootstrap"] = 0  # 0 is a value, not "off": another variant
    assert variant_key(old) != variant_key(new)
