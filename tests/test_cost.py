"""scripts/cost.py (make cost): the fitted exponent, the table, and a quick end-to-end run."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("cost", ROOT / "scripts" / "cost.py")
cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost)


def _points(model, phase, exponent, scale=1e-4):
    return [
        {"model": model, "phase": phase, "device": "cpu", "src_len": n, "tgt_len": n, "batch": 8,
         "s_per_sentence": scale * n**exponent, "peak_mib": n / 10, "params": 1}
        for n in (10, 20, 40, 80)
    ]  # fmt: skip


def test_fit_exponent_recovers_a_power_law():
    assert cost.fit_exponent(_points("none", "greedy", 1.0)) == pytest.approx(1.0)
    assert cost.fit_exponent(_points("bahdanau", "greedy", 2.0, 3e-7)) == pytest.approx(2.0)
    assert cost.fit_exponent(_points("none", "greedy", 1.0)[:1]) is None


def test_report_tables_and_exponents(tmp_path):
    points = _points("none", "train_step", 1.0) + _points("transformer", "train_step", 2.0, 1e-6)
    text = cost.report(points, tmp_path)
    assert "### train_step on cpu" in text and "| source words | none | transformer |" in text
    assert "| time exponent | 1.00 | 2.00 |" in text
    assert "| 10 | 1.00 / 1 | 0.10 / 1 |" in text  # ms per sentence / MiB
    assert (tmp_path / "cost.md").read_text(encoding="utf-8").strip() == text.strip()
    cost.plot(points, tmp_path)
    assert (tmp_path / "cost.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "cost.py"), "--quick", "--models", "transformer",
               "--phases", "greedy", "train_step", "--lengths", "4", "8", "--batch", "2", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    points = json.loads((tmp_path / "cost.json").read_text())
    assert len(points) == 4 and {p["model"] for p in points} == {"transformer"}
    assert all(p["s_per_sentence"] > 0 and math.isfinite(p["peak_mib"]) for p in points)
    assert {p["tgt_len"] for p in points} == {4, 8}
    assert (tmp_path / "cost.png").exists() and "time exponent" in (tmp_path / "cost.md").read_text()
