"""Several time-to-BLEU runs pooled (scripts/benchmark/end_to_end_runs.py): per-run rows, intervals, checks."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "benchmark"))

from end_to_end import summarise  # noqa: E402
from end_to_end_runs import format_runs, main, pool, read_pairs  # noqa: E402

COMMAND = "python scripts/benchmark/run.py --end-to-end --budget-minutes 20 --validate-every 250"


def write_run(
    folder: Path, joey_best_at: float, ours_at: float, tests: tuple[float, float], seed=None
) -> Path:
    """An end_to_end.json as run.py writes it: JoeyNMT reaches its best (16.0) at ``joey_best_at`` seconds,
    seq2seq reaches 16.0 at ``ours_at``; ``tests``: the two test BLEUs."""
    curves = {
        "seq2seq": [(ours_at / 2, 9.0), (ours_at, 16.0), (ours_at * 2, 20.0)],
        "joeynmt": [(joey_best_at / 2, 10.0), (joey_best_at, 16.0), (1190.0, 15.5)],
    }
    summary = {
        "command": COMMAND + ("" if seed is None else f" --seed {seed}"),
        "budget_minutes": 20.0,
        "validate_every": 250,
        "seq2seq_attention": "luong_concat",
        "data": "Bible en→es",
        **summarise(curves, {"seq2seq": {"test_bleu": tests[0]}, "joeynmt": {"test_bleu": tests[1]}}),
    }
    folder.mkdir(parents=True)
    (folder / "end_to_end.json").write_text(json.dumps(summary), "utf-8")
    return folder / "end_to_end.json"


def test_pooled_ratio_and_differences_on_known_runs(tmp_path):
    paths = [
        write_run(tmp_path / "a", 1000.0, 400.0, (21.0, 16.0)),  # ratio 0.4, difference 5
        write_run(tmp_path / "b", 1000.0, 500.0, (20.0, 17.0), seed=1),  # 0.5, 3
        write_run(tmp_path / "c", 800.0, 500.0, (20.0, 16.0), seed=2),  # 0.625, 4
    ]
    pairs = read_pairs(paths)
    assert [p.seed for p in pairs] == [1234, 1, 2]  # run.py's default seed when the command names none
    assert [p.ratio for p in pairs] == pytest.approx([0.4, 0.5, 0.625])
    pooled = pool(pairs)
    logs = [math.log(0.4), math.log(0.5), math.log(0.625)]
    mean, sd = sum(logs) / 3, (sum((v - sum(logs) / 3) ** 2 for v in logs) / 2) ** 0.5
    half = 4.3027 * sd / 3**0.5  # t(0.975, 2)
    assert pooled["ratio_geometric_mean"] == pytest.approx(math.exp(mean))
    assert pooled["ratio_interval"] == pytest.approx([math.exp(mean - half), math.exp(mean + half)], rel=1e-4)
    assert pooled["ratio_range"] == pytest.approx([0.4, 0.625]) and pooled["ratio_met"] == 2
    assert pooled["median_ratio_bound"] == pytest.approx(0.625)
    assert pooled["median_ratio_bound_confidence"] == pytest.approx(0.875)
    test = pooled["test_bleu_difference"]
    assert test["mean"] == pytest.approx(4.0) and test["range"] == [3.0, 5.0]
    assert test["interval"] == pytest.approx([4 - 4.3027 / 3**0.5, 4 + 4.3027 / 3**0.5], rel=1e-4)
    assert pooled["best_dev_bleu_difference"]["mean"] == pytest.approx(4.0)  # 20 against 16, every run
    assert pooled["repeated_seeds"] == []
    text = format_runs(pairs, pooled)
    assert "| a | 1234 | 16.0 | 16.7 | 6.7 | 0.40 | 20.0 | 21.0 | 16.0 | 5.0 |" in text
    assert "2 of 3 at or below 0.5" in text and "at most 0.62 with confidence 87.5 %" in text


def test_a_repeated_seed_is_flagged(tmp_path):
    paths = [write_run(tmp_path / n, 1000.0, 400.0, (21.0, 16.0), seed=7) for n in ("a", "b")]
    pooled = pool(read_pairs(paths))
    assert pooled["repeated_seeds"] == [7]
    assert "seed(s) 7 ran more than once" in format_runs(read_pairs(paths), pooled)


def test_runs_of_other_set_ups_or_other_files_are_refused_by_name(tmp_path, capsys):
    good = write_run(tmp_path / "a", 1000.0, 400.0, (21.0, 16.0))
    other = write_run(tmp_path / "b", 1000.0, 400.0, (21.0, 16.0))
    summary = json.loads(other.read_text("utf-8"))
    other.write_text(json.dumps({**summary, "budget_minutes": 30.0}), "utf-8")
    assert main([str(good), str(other)]) == 2
    assert f"{other}: budget_minutes is 30.0, {good}'s is 20.0" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"seq2seq": {}}), "utf-8")
    assert main([str(good), str(tmp_path / "results.json")]) == 2
    assert "results.json: not an end_to_end.json" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_the_command_writes_its_table_figure_and_json(tmp_path, capsys):
    paths = [write_run(tmp_path / n, 900.0, 300.0, (20.0, 15.0), seed=s) for n, s in (("a", 1), ("b", 2))]
    out, figure = tmp_path / "pooled.json", tmp_path / "fig" / "runs.png"
    assert main([*map(str, paths), "--figure", str(figure), "--out", str(out)]) == 0
    assert "time ratio over 2 runs" in capsys.readouterr().out
    assert figure.stat().st_size > 5000
    written = json.loads(out.read_text("utf-8"))
    assert [r["seed"] for r in written["runs"]] == [1, 2] and written["pooled"]["runs"] == 2
