"""Tests for seq2seq.analysis.influence: source-position gradients of trained and hand-made models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq.analysis.influence import (
    absolute_position_curve,
    influence_profiles,
    load_test_split,
    relative_position_curve,
    run,
    source_gradient_norms,
    summarise,
)
from seq2seq.dashboard.build import build_dashboard
from seq2seq.data.batching import Example, collate
from seq2seq.inference.checkpoint import CheckpointError, TrainedModel, load_checkpoint
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.train import train
from tests.conftest import CONF, TINY, compose_train, run_module

# Longer and more varied sources than TINY's, so that batches mix lengths and padding.
DATA = ["data.sizes.test=16", "data.min_len=2", "data.max_len=14", "data.batch.max_tokens=400"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained runs (3 steps each): the fixed-context model and Bahdanau attention."""
    dirs = {}
    for attention in ("none", "bahdanau"):
        tmp = tmp_path_factory.mktemp(attention)
        train(compose_train(tmp, *TINY, *DATA, f"model/attention={attention}", "model.context=init"))
        dirs[attention] = tmp / "run"
    return dirs


def _load(run_dir: Path) -> tuple[TrainedModel, list, object]:
    trained = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    pairs, dataset = load_test_split(trained)
    return trained, pairs, dataset


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("influence", overrides=["threads=1", *overrides])


# ---------------------------------------------------------------- the gradient


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_padding_gets_exactly_zero_and_every_real_position_some_influence(runs, attention):
    """Real positions of a mixed-length batch all matter (for `none` only through the final state)."""
    trained, _, dataset = _load(runs[attention])
    batch = collate(list(dataset))
    assert len(set(batch.src_lengths.tolist())) > 2  # padding is really present
    norms = source_gradient_norms(trained.model, batch)
    assert norms.shape == batch.src.shape
    real = batch.src != 0
    assert torch.all(norms[~real] == 0.0)
    assert torch.all(norms[real] > 0.0)


def test_profiles_sum_to_one_and_do_not_depend_on_batching(runs):
    trained, pairs, dataset = _load(runs["bahdanau"])
    one_by_one = influence_profiles(trained.model, dataset, batch_size=1)
    together = influence_profiles(trained.model, dataset, batch_size=64)
    assert len(together) == len(pairs) == len(dataset)
    for p, q, example in zip(one_by_one, together, dataset, strict=True):
        assert p.shape == (len(example.src),)
        assert p.sum() == pytest.approx(1.0, abs=1e-12) and np.all(p > 0)
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-7)
    again = influence_profiles(trained.model, dataset, batch_size=64)
    assert all(np.array_equal(p, q) for p, q in zip(together, again, strict=True))  # deterministic


def test_reverse_source_flips_the_profile_back(runs):
    trained, _, dataset = _load(runs["none"])
    forward = influence_profiles(trained.model, dataset, batch_size=8)
    flipped = influence_profiles(trained.model, dataset, batch_size=8, reverse_source=True)
    assert all(np.array_equal(p[::-1], q) for p, q in zip(forward, flipped, strict=True))


def test_dropout_must_be_off(runs):
    trained, _, dataset = _load(runs["none"])
    trained.model.train()
    with pytest.raises(ValueError, match="eval"):
        source_gradient_norms(trained.model, collate(list(dataset)[:2]))


def test_untrained_unidirectional_tanh_rnn_matches_backpropagation_through_time():
    """Without attention (context=init) the source reaches log p only through c = h_n, so

        ∂L/∂e_j = W_ihᵀ δ_j,   δ_n = D_n ∂L/∂c,   δ_{j-1} = D_{j-1} W_hhᵀ δ_j,   D_t = diag(1 - h_t²)

    for h_t = tanh(W_ih e_t + W_hh h_{t-1} + b). The last position's influence is one step,
    ||W_ihᵀ D_n ∂L/∂c||, and since |tanh'| ≤ 1 every position obeys
    g_j ≤ ||W_ih||₂ ||W_hh||₂^(n-j) ||D_n ∂L/∂c||: with ||W_hh||₂ = 1/2 the bound halves per step back.
    """
    torch.manual_seed(0)
    model = EncoderDecoder(
        11, 13, embedding_size=6, hidden_size=8, rnn_type="rnn", bidirectional=False, attention="none"
    ).eval()
    rnn = model.encoder.rnn
    with torch.no_grad():
        rnn.weight_hh_l0 *= 0.5 / torch.linalg.matrix_norm(rnn.weight_hh_l0, ord=2)
    n = 12
    example = Example(0, torch.randint(4, 11, (n,)).tolist(), torch.randint(4, 13, (5,)).tolist())
    batch = collate([example])
    g = source_gradient_norms(model, batch)[0].double()  # (n,)

    with torch.no_grad():
        outputs, final = model.encoder(model.src_embedding(batch.src), batch.src_lengths)  # (1, n, H)
    context = final.detach().requires_grad_(True)  # (1, 1, H)
    memory = model.decoder.prepare_memory(outputs, batch.src != 0, context)
    logits, _ = model.decoder(batch.tgt_in, memory, model.decoder.init_state(context))
    log_likelihood = logits.log_softmax(-1).gather(-1, batch.tgt_out.unsqueeze(-1)).sum()
    (grad_context,) = torch.autograd.grad(log_likelihood, context)

    h = outputs[0].double()  # (n, H)
    w_ih, w_hh = rnn.weight_ih_l0.double(), rnn.weight_hh_l0.double()
    delta = (1 - h[-1] ** 2) * grad_context[0, 0].double()  # δ_n
    expected = torch.empty(n, dtype=torch.float64)
    for j in range(n - 1, -1, -1):
        expected[j] = torch.linalg.vector_norm(w_ih.T @ delta)
        if j:
            delta = (1 - h[j - 1] ** 2) * (w_hh.T @ delta)
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-8)

    start = torch.linalg.vector_norm((1 - h[-1] ** 2) * grad_context[0, 0].double())
    bound = torch.linalg.matrix_norm(w_ih, ord=2) * 0.5 ** torch.arange(n - 1, -1, -1.0) * start
    assert torch.all(g <= bound * (1 + 1e-4))


# ---------------------------------------------------------------- aggregation


def test_uniform_profiles_are_flat_at_one():
    profiles = [np.full(n, 1.0 / n) for n in (1, 3, 7, 10, 25)]
    curve = relative_position_curve(profiles, bins=10)
    assert curve["edges"] == pytest.approx(np.linspace(0, 1, 11))
    assert all(m == pytest.approx(1.0) for m in curve["mean"])
    assert all(s == pytest.approx(0.0, abs=1e-12) for s in curve["std"])
    absolute = absolute_position_curve(profiles, max_positions=12)
    assert absolute["positions"] == list(range(1, 13))
    assert absolute["n"] == [5, 4, 4, 3, 3, 3, 3, 2, 2, 2, 1, 1]  # sentences at least that long
    assert absolute["mean"][:11] == pytest.approx([1.0] * 11) and absolute["mean"][11] == pytest.approx(1.0)


def test_relative_bins_use_position_centres():
    """n = 4: centres 1/8, 3/8, 5/8, 7/8 fall in bins 0, 1, 2, 3 of 4; n = 2: centres 1/4, 3/4 in bins 1, 3."""
    four = np.array([0.4, 0.3, 0.2, 0.1])
    two = np.array([0.75, 0.25])
    curve = relative_position_curve([four, two], bins=4)
    assert curve["n"] == [1, 2, 1, 2]
    assert curve["mean"] == pytest.approx([1.6, (1.2 + 1.5) / 2, 0.8, (0.4 + 0.5) / 2])
    assert curve["std"][1] == pytest.approx(0.15)
    empty = relative_position_curve([two], bins=4)
    assert empty["mean"][0] is None and empty["std"][0] is None and empty["n"][0] == 0


def test_summarise_groups_by_source_words():
    profiles = [np.full(n, 1.0 / n) for n in (3, 30, 50)]
    summary = summarise(
        profiles, [3, 30, 50], bins=5, max_positions=4, length_groups={"short": (1, 20), "long": (41, None)}
    )
    assert list(summary) == ["all", "short", "long"]
    assert [summary[g]["n_sentences"] for g in summary] == [3, 1, 1]
    assert summary["long"]["min_words"] == 41 and summary["long"]["max_words"] is None
    assert summary["short"]["absolute"]["n"] == [1, 1, 1, 0]


# ---------------------------------------------------------------- entry point


def test_run_writes_json_and_png_and_leaves_results_alone(runs):
    run_dir = runs["none"]
    before = (run_dir / "results.json").read_bytes()
    payload = run(_compose(f"run_dir={run_dir}", "max_sentences=10", "bins=5", "max_positions=8"))
    assert (run_dir / "results.json").read_bytes() == before
    assert json.loads((run_dir / "influence.json").read_text()) == payload
    assert payload["schema"] == 1 and payload["n_sentences"] == 10
    assert payload["model"]["attention"] == "none" and payload["model"]["context"] == "init"
    assert payload["config"]["bins"] == 5 and payload["config"]["length_groups"]["long"] == [41, None]
    every = payload["groups"]["all"]
    assert every["n_sentences"] == 10 and len(every["relative"]["mean"]) == 5
    assert every["absolute"]["n"][0] == 10
    assert payload["groups"]["long"]["n_sentences"] == 0 and all(
        m is None for m in payload["groups"]["long"]["relative"]["mean"]
    )
    assert (run_dir / "plots" / "influence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_logger_logs_and_finishes(runs, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    payload = run(_compose(f"run_dir={runs['bahdanau']}", "max_sentences=4", "logger=wandb"))
    assert payload["model"]["attention"] == "bahdanau"
    assert wandb.run is None


@pytest.mark.parametrize(
    ("override", "option"),
    [("bins=0", "bins"), ("batch_size=-1", "batch_size"), ("max_sentences=0", "max_sentences"),
     ("length_groups.short=[30,20]", "length_groups.short"), ("+length_groups.all=[1,5]", "length_groups.all")],
)  # fmt: skip
def test_bad_options_name_the_option(runs, override, option):
    with pytest.raises(ValueError, match=f"`{option}`"):
        run(_compose(f"run_dir={runs['none']}", override))


def test_missing_run_dir_or_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="missing run_dir"):
        run(_compose())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(_compose(f"run_dir={tmp_path / 'nope'}"))
    with pytest.raises(CheckpointError, match=r"without checkpoints/best\.ckpt or checkpoints/last\.ckpt"):
        run(_compose(f"run_dir={tmp_path}"))
    with pytest.raises(CheckpointError, match="ckpt_path="):
        run(_compose(f"run_dir={tmp_path}", f"ckpt_path={tmp_path / 'x.ckpt'}"))


@pytest.mark.slow  # a fresh interpreter imports torch and Lightning
def test_cli_writes_json_and_png(runs, tmp_path):
    run_dir = runs["bahdanau"]
    args = [f"run_dir={run_dir}", "max_sentences=6", "threads=1"]
    proc = run_module(
        "seq2seq.analysis.influence", *args, cwd=tmp_path, home=tmp_path.parent, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "by relative source position" in proc.stdout
    assert json.loads((run_dir / "influence.json").read_text())["n_sentences"] == 6
    assert (run_dir / "plots" / "influence.png").exists()
    assert list(tmp_path.iterdir()) == []  # Hydra keeps no directory of its own


def test_cli_without_run_dir_fails_cleanly(tmp_path):
    proc = run_module("seq2seq.analysis.influence", cwd=tmp_path, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing run_dir" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- dashboard


def _write_job(sweep: Path, job: str, attention: str, first: float) -> None:
    """A completed job with an influence.json whose profiles give the first token ``first`` of the mass."""
    job_dir = sweep / job
    job_dir.mkdir(parents=True)
    choices = {"model/encoder": "gru", "model/attention": attention}
    (job_dir / "results.json").write_text(
        json.dumps({"schema": 1, "status": "completed", "choices": choices, "config": {}, "metrics": {}})
    )
    profiles = [np.array([first, *[(1 - first) / (n - 1)] * (n - 1)]) for n in (10, 20, 30)]
    groups = summarise(profiles, [10, 20, 30], bins=10, max_positions=30, length_groups={})
    payload = {"schema": 1, "model": {"attention": attention}, "n_sentences": 3, "groups": groups}
    (job_dir / "influence.json").write_text(json.dumps(payload))


def test_dashboard_overlays_influence_of_all_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    _write_job(sweep, "0", "none", 0.02)
    _write_job(sweep, "1", "bahdanau", 0.3)
    index = build_dashboard(sweep)
    page = index.read_text()
    assert "Influence by source position" in page
    png = index.parent / "influence.png"
    assert png.exists() and png.stat().st_size > 5000
    (sweep / "0" / "influence.json").unlink()
    (sweep / "1" / "influence.json").write_text('{"schema": 99}')  # unreadable analyses are skipped
    png.unlink()
    assert "Influence by source position" not in build_dashboard(sweep).read_text()
    assert not png.exists()
