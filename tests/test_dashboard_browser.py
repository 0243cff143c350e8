"""The dashboard page in a real headless Chromium: it renders, its script runs, and the table sorts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from seq2seq.dashboard.build import build_dashboard
from seq2seq.dashboard.runs import load_runs
from tests.test_dashboard import write_failed_job, write_heatmap, write_job

ENSURE_CHROMIUM = Path(__file__).resolve().parents[1] / "scripts" / "ensure_chromium.sh"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium binary, installed by scripts/ensure_chromium.sh when missing (and we are root)."""
    proc = subprocess.run(["bash", str(ENSURE_CHROMIUM)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"headless Chromium cannot be installed here: {reason}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def index(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    write_job(sweep, "0", "bahdanau", 128, [40.0, 38.0, None, 30.0])
    write_job(sweep, "1", "none", 128, [35.0, 20.0, None, 5.0])
    heatmap_job = write_job(sweep, "2", "bahdanau", 64, [30.0, 28.0, 25.0, None])
    write_job(sweep, "10", "none", 64, [25.0, 12.0, 4.0, None])
    write_failed_job(sweep, "3", "ValueError: data.max_len must be positive")
    write_heatmap(heatmap_job / "plots" / "attention" / "example_0.png")
    return build_dashboard(sweep)


def run_chromium(chromium: str, tmp_path: Path, url: str, *flags: str) -> str:
    """Run headless Chromium on `url` with the given output flags; returns its stdout."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,2000", *flags, url,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def test_page_renders_a_nonblank_screenshot(chromium: str, index: Path, tmp_path: Path) -> None:
    shot = tmp_path / "screenshot.png"
    run_chromium(chromium, tmp_path, index.as_uri(), f"--screenshot={shot}")
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: the page looks blank"
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.05, f"only {not_white:.1%} of the page is not white"


def test_script_runs_and_sorts_the_table(chromium: str, index: Path, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path, index.as_uri() + "#sort=test/bleu:desc", "--dump-dom")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body, f"the table script did not finish: {body}"
    assert "data-js-error" not in body, f"a script error: {body}"
    rows = re.findall(r'<tr class="job (status-\w+)"><td class="" data-sort="([^"]*)">', dom)
    assert len(rows) == 5 and ("status-failed", "3") in rows
    runs = load_runs(index.parents[1])
    expected = [r.job for r in sorted(runs, key=lambda r: -r.metrics.get("test/bleu", -1.0))]
    assert [job for _, job in rows] == expected  # by test BLEU, descending; the failed job (no BLEU) last
    assert 'data-key="test/bleu" data-dir="desc"' in dom
