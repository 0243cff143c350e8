"""Tests for seq2seq.analysis.retention: the maths of ||W^T||_2 and the Hydra entry point."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from seq2seq.analysis.retention import (
    first_token_retention,
    retention_table,
    run,
    scaled_recurrent_matrix,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hidden_size", [1, 4, 17])
@pytest.mark.parametrize("rho", [0.5, 0.9, 1.3])
def test_scaled_matrix_has_requested_spectral_radius(hidden_size, rho):
    w = scaled_recurrent_matrix(hidden_size, rho, seed=0)
    assert w.shape == (hidden_size, hidden_size)
    assert np.max(np.abs(np.linalg.eigvals(w))) == pytest.approx(rho, rel=1e-9)


def test_zero_steps_leaves_the_identity():
    assert first_token_retention(0, hidden_size=6, spectral_radius=0.9, seed=1) == 1.0


def test_value_is_the_spectral_norm_of_the_matrix_power():
    w = scaled_recurrent_matrix(5, 0.9, seed=2)
    assert first_token_retention(1, 5, 0.9, 2) == pytest.approx(np.linalg.norm(w, ord=2), rel=1e-12)
    expected = np.linalg.norm(np.linalg.matrix_power(w, 13), ord=2)
    assert first_token_retention(13, 5, 0.9, 2) == pytest.approx(expected, rel=1e-8)


def test_seed_determines_the_result():
    a = first_token_retention(10, 8, 0.9, seed=7)
    assert first_token_retention(10, 8, 0.9, seed=7) == a
    assert first_token_retention(10, 8, 0.9, seed=8) != a


def test_does_not_touch_numpys_global_random_state():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    first_token_retention(3, 4, 0.9, seed=0)
    assert np.random.rand() == expected


def test_contraction_decays_at_large_T():
    # rho < 1: ||W^T|| <= kappa(V) rho^T -> 0, so a long horizon keeps less than a short one.
    for h in (4, 32):
        assert first_token_retention(100, h, 0.9, 0) < first_token_retention(10, h, 0.9, 0)


def test_norm_stays_inside_its_envelopes():
    """rho^T <= ||W^T||_2 <= min(||W||_2^T, kappa(V) rho^T) for a diagonalisable W = V diag(lambda) V^-1.

    Lower: the spectral radius is at most any induced norm and rho(W^T) = rho^T (Gelfand).
    Upper: submultiplicativity, and ||V diag(lambda)^T V^-1|| <= ||V|| ||V^-1|| rho^T.
    """
    rho, h, seed = 0.9, 12, 3
    w = scaled_recurrent_matrix(h, rho, seed)
    kappa = np.linalg.cond(np.linalg.eig(w)[1], p=2)
    one_step = np.linalg.norm(w, ord=2)
    for t in (1, 2, 5, 10, 20, 50, 200):
        norm = first_token_retention(t, h, rho, seed)
        assert rho**t * (1 - 1e-9) <= norm
        assert norm <= min(one_step**t, kappa * rho**t) * (1 + 1e-9)


def test_table_rows_match_the_function():
    rows = retention_table([10, 1, 4], [6, 3], spectral_radius=0.8, seed=5)
    assert [(r["hidden_size"], r["steps"]) for r in rows] == [
        (3, 1),
        (3, 4),
        (3, 10),
        (6, 1),
        (6, 4),
        (6, 10),
    ]
    for r in rows:
        assert r["retained_norm"] == first_token_retention(r["steps"], r["hidden_size"], 0.8, 5)
        assert r["envelope"] == pytest.approx(0.8 ** r["steps"])
        assert r["ratio"] == pytest.approx(r["retained_norm"] / r["envelope"])
        assert r["ratio"] >= 1 - 1e-9


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"spectral_radius": 0.0}, "spectral_radius"),
        ({"spectral_radius": -0.5}, "spectral_radius"),
        ({"steps": []}, "steps"),
        ({"steps": [5, 0]}, "steps"),
        ({"steps": [-3]}, "steps"),
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [4, 0]}, "hidden_sizes"),
        ({"hidden_sizes": [2.5]}, "hidden_sizes"),
    ],
)
def test_bad_options_name_the_option(kwargs, option):
    args = {"steps": [1, 5], "hidden_sizes": [2], "spectral_radius": 0.9, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=f"`{option}`"):
        retention_table(**args)


def test_negative_steps_rejected_by_the_function():
    with pytest.raises(ValueError, match="`steps`"):
        first_token_retention(-1, 4, 0.9, 0)


def _compose(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("retention", overrides=[f"output_dir={tmp_path}", *overrides])


def test_default_config():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("retention", return_hydra_config=True)
    assert cfg.seed == 42 and cfg.spectral_radius == 0.9 and cfg.logger.name == "none"
    assert list(cfg.steps) == [1, 5, 10, 20, 30, 50, 100]
    assert list(cfg.hidden_sizes) == [4, 16, 64, 256, 1024]
    assert cfg.hydra.run.dir.startswith("outputs/retention/")


def test_wandb_logger_logs_and_finishes(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = _compose(tmp_path, "logger=wandb", "steps=[1,2]", "hidden_sizes=[3]")
    payload = run(cfg)
    assert len(payload["rows"]) == 2
    assert (tmp_path / "retention.png").exists()
    assert wandb.run is None


def test_unknown_logger_is_rejected(tmp_path):
    with pytest.raises(MissingConfigException, match="logger"):
        _compose(tmp_path, "logger=tensorboard")


def test_cli_writes_json_and_png(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "seq2seq.analysis.retention", f"hydra.run.dir={out}"]
    cmd += ["seed=3", "spectral_radius=0.8", "steps=[1,3,7]", "hidden_sizes=[2,5]"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "T=7" in proc.stdout

    payload = json.loads((out / "retention.json").read_text())
    assert payload["config"] == {
        "seed": 3,
        "spectral_radius": 0.8,
        "steps": [1, 3, 7],
        "hidden_sizes": [2, 5],
    }
    assert payload["rows"] == retention_table([1, 3, 7], [2, 5], 0.8, 3)
    assert (out / "retention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / ".hydra" / "config.yaml").exists()
