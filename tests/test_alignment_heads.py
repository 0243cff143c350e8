"""Per-layer, per-head alignment of the Transformer decoder: the weights, the scoring, and the analysis's runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from seq2seq.analysis.alignment_heads import check_run, markdown_table, run
from seq2seq.dashboard.build import build_dashboard
from seq2seq.data.synthetic import generate_pairs
from seq2seq.data.toy_alignment import toy_alignment
from seq2seq.evaluation.alignment import GoldSentence, judge
from seq2seq.evaluation.head_alignment import accuracy_grid, attention_heads, rank_heads, score_heads
from seq2seq.inference.checkpoint import load_checkpoint
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.train import train
from tests.conftest import CONF, TOY, compose_train, run_module
from tests.wandb_records import read_run

TRANSFORMER = ["model/encoder=transformer", "model/decoder=transformer"]
SMALL = ["model.encoder.ff_size=32", "model.decoder.ff_size=32", "model.decoder.num_layers=2"]


def _tiny_transformer() -> EncoderDecoder:
    torch.manual_seed(0)
    model = EncoderDecoder(
        20, 20, 12, 16, attention="multihead", encoder_type="transformer", decoder_type="transformer",
        encoder_layers=2, decoder_layers=3, encoder_ff_size=24, decoder_ff_size=24, encoder_heads=4,
        decoder_heads=4, encoder_dropout=0.0, decoder_dropout=0.0,
    )  # fmt: skip
    return model.double().eval()


def test_per_head_weights_average_to_the_last_layers_head_average():
    """Every layer's per-head weights, (L, B, h, T, S): distributions, zero at padding, and the last layer's
    mean over heads is the attention the decoder reports (heat maps, results.json) — the logits unchanged."""
    model = _tiny_transformer()
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([7, 4, 2])
    src = torch.randint(4, 20, (3, 7), generator=g)
    for row, n in enumerate(lengths.tolist()):
        src[row, n:] = 0
    tgt = torch.randint(4, 20, (3, 5), generator=g)
    heads = attention_heads(model, src, lengths, tgt)
    assert heads.shape == (3, 3, 4, 5, 7)  # L, B, h, T, S
    torch.testing.assert_close(heads.sum(dim=-1), torch.ones(3, 3, 4, 5, dtype=torch.float64))
    assert torch.all(heads[:, 1, :, :, 4:] == 0) and torch.all(heads[:, 2, :, :, 2:] == 0)
    with torch.no_grad():
        logits, averaged = model(src, lengths, tgt, return_attention=True)  # (B, T, V), (B, T, S)
        memory, _ = model.encode(src, lengths)
        out, _, _ = model.decoder._run(model.decoder.embedding(tgt), None, memory, False, every_head=True)
    torch.testing.assert_close(heads[-1].mean(dim=1), averaged)
    assert not torch.allclose(heads[0].mean(dim=1), averaged)  # the lower layers are not the last one
    torch.testing.assert_close(model.decoder.logits(out), logits)


def test_a_head_forced_onto_gold_scores_perfectly_and_ranks_first():
    pairs = generate_pairs("toy_translation", 20, 3, 15, seed=5)
    sentences = []
    for source, target in pairs:
        n_src, n_tgt = len(source.split()), len(target.split())
        sentences.append(
            GoldSentence(n_src, n_tgt, list(range(n_src)), list(range(n_tgt)), toy_alignment(source))
        )
    batch, steps, width = (
        len(pairs),
        max(s.n_target for s in sentences) + 1,
        max(s.n_source for s in sentences),
    )
    g = torch.Generator().manual_seed(0)
    heads = torch.softmax(torch.randn(2, batch, 3, steps, width, generator=g) * 3, dim=-1)  # (L, B, h, T, S)
    heads[1, :, 2] = 0.0
    for row, s in enumerate(sentences):
        heads[1, row, 2, torch.arange(s.n_target), torch.as_tensor(s.gold)] = 1.0  # layer 2, head 3: gold
    counts = {}
    for layer in range(2):
        for head in range(3):
            counts[layer, head] = judge(heads[layer, :, head], sentences)
        counts[layer, None] = judge(heads[layer].mean(dim=1), sentences)
    entries = score_heads([s for s, _ in pairs], counts, [1, 6, 11])
    assert [(e["layer"], e["head"]) for e in entries] == [
        (1, 1), (1, 2), (1, 3), (1, None), (2, 1), (2, 2), (2, 3), (2, None)
    ]  # fmt: skip
    forced = entries[6]
    assert forced["accuracy"] == 100.0 and forced["aer"] == 0.0
    assert forced["gold_mass"] == pytest.approx(100.0)
    assert forced["sentences"] == 20 and sum(row["n"] for row in forced["by_length"]) == 20
    assert all(e["accuracy"] < 60.0 for e in entries[:6])  # random heads
    ranking = rank_heads(entries)
    assert (ranking[0]["layer"], ranking[0]["head"]) == (2, 3) and len(ranking) == 6
    assert [e["accuracy"] for e in ranking] == sorted((e["accuracy"] for e in ranking), reverse=True)
    grid = accuracy_grid(entries)
    assert len(grid) == 2 and len(grid[1]) == 4 and grid[1][2] == 100.0
    assert grid[1][3] == entries[7]["accuracy"]
    assert "| 2 | 3 | 100.0 | 0.0 | 100.0 |" in markdown_table(entries)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny toy runs (3 steps): a two-layer Transformer decoder (logged to W&B offline), and an RNN decoder with
    Bahdanau attention."""
    dirs = {}
    for name, overrides in (("transformer", [*TRANSFORMER, *SMALL, "logger=wandb"]), ("rnn", [])):
        tmp = tmp_path_factory.mktemp(name)
        train(compose_train(tmp, *TOY, *overrides))
        dirs[name] = tmp / "run"
    return dirs


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("alignment_heads", overrides=["threads=1", *overrides])


def test_run_writes_json_markdown_and_heatmap_per_layer_and_head(runs, tmp_path):
    run_dir = runs["transformer"]
    before = (run_dir / "results.json").read_bytes()
    payload = run(_compose(f"run_dir={run_dir}", f"out_dir={tmp_path / 'out'}"))
    out = tmp_path / "out"
    assert json.loads((out / "alignment_heads.json").read_text()) == payload
    assert (run_dir / "results.json").read_bytes() == before
    assert payload["layers"] == 2 and payload["heads"] == 4 and payload["n_sentences"] == 12
    singles = [e for e in payload["entries"] if e["head"] is not None]
    assert sorted((e["layer"], e["head"]) for e in singles) == [
        (la, h) for la in (1, 2) for h in (1, 2, 3, 4)
    ]
    assert len(payload["entries"]) == 2 * 5  # and one head average per layer
    for entry in payload["entries"]:
        assert entry["sentences"] == 12
        assert all(0.0 <= entry[k] <= 100.0 for k in ("accuracy", "aer", "gold_mass"))
    assert len(payload["ranking"]) == 8 and payload["best_head"]["accuracy"] == max(
        e["accuracy"] for e in singles
    )
    # the last layer's head average is what the run itself recorded for the same checkpoint
    recorded = json.loads(before)["metrics"]["test/alignment_accuracy"]
    last_mean = next(e for e in payload["entries"] if e["layer"] == 2 and e["head"] is None)
    assert last_mean["accuracy"] == pytest.approx(recorded)
    table = (out / "alignment_heads.md").read_text()
    assert table.count("\n| ") == 1 + 10 and "| layer | head | accuracy % | AER % | gold mass % |" in table
    assert (out / "plots" / "alignment_heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_scores_every_head_in_results_wandb_and_a_heatmap(runs):
    """A Transformer run on toy data scores its test split per layer and head itself: results.json's
    ``alignment_heads`` and ``test/alignment_accuracy/L<l>H<h>`` metrics, the heat map, and W&B (read back
    from the offline files); the last layer's head average is the run's ``test/alignment_accuracy``."""
    results = json.loads((runs["transformer"] / "results.json").read_text())
    entries, metrics = results["alignment_heads"], results["metrics"]
    assert [(e["layer"], e["head"]) for e in entries] == [
        (layer, head) for layer in (1, 2) for head in (1, 2, 3, 4, None)
    ]
    last_mean = entries[-1]
    assert last_mean["accuracy"] == pytest.approx(metrics["test/alignment_accuracy"])
    for mine, run_wide in zip(last_mean["by_length"], results["alignment"]["by_length"], strict=True):
        assert (mine["bucket"], mine["n"]) == (run_wide["bucket"], run_wide["n"])
        assert mine["accuracy"] == pytest.approx(run_wide["accuracy"], nan_ok=True)
    for e in entries:
        name = f"L{e['layer']}" + ("mean" if e["head"] is None else f"H{e['head']}")
        assert metrics[f"test/alignment_accuracy/{name}"] == pytest.approx(e["accuracy"])
    png = runs["transformer"] / "plots" / "alignment_heads.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (offline,) = (runs["transformer"] / "wandb").glob("offline-run-*")
    logged = read_run(offline)
    assert logged.summary["test/alignment_accuracy/L2H3"] == pytest.approx(
        metrics["test/alignment_accuracy/L2H3"]
    )
    stepped = [row for row in logged.history if "test/alignment_accuracy/L1H1" in row]
    assert stepped and stepped[-1]["test/alignment_accuracy/L1H1"] == pytest.approx(
        metrics["test/alignment_accuracy/L1H1"]
    )
    assert any(key.startswith("test/alignment_heads/") for row in logged.history for key in row)
    rnn = json.loads((runs["rnn"] / "results.json").read_text())  # one attention, no heads
    assert rnn["alignment_heads"] is None and rnn["alignment"] is not None
    assert not any(k.startswith("test/alignment_accuracy/") for k in rnn["metrics"])
    assert not (runs["rnn"] / "plots" / "alignment_heads.png").exists()


def test_dashboard_shows_alignment_by_length_and_per_head(runs, tmp_path):
    """The real runs as a sweep: the alignment column, the accuracy-by-length figure with both jobs, and the
    per-head heat map of the Transformer job only."""
    sweep = tmp_path / "sweep"
    for job, name in enumerate(("transformer", "rnn")):
        shutil.copytree(runs[name], sweep / str(job), ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    page = build_dashboard(sweep).read_text()
    head = page.split('<table id="jobs">')[1].split("</thead>")[0]
    assert 'data-key="test/alignment_accuracy"' in head
    assert "a Transformer decoder's is its last layer's cross-attention, heads averaged" in page
    for name in ("transformer", "rnn"):
        value = json.loads((runs[name] / "results.json").read_text())["metrics"]["test/alignment_accuracy"]
        assert f'data-sort="{value}"' in page
    assert (sweep / "dashboard" / "alignment_by_length.png").stat().st_size > 5000
    assert "Test alignment accuracy by source length bucket" in page
    section = page.split('<section id="alignment-heads">')[1].split("</section>")[0]
    assert section.count("<figure>") == 1 and "job 0: test alignment accuracy" in section


def test_non_toy_data_and_bad_options_are_clear_errors(runs, tmp_path):
    trained = load_checkpoint(runs["transformer"] / "checkpoints" / "best.ckpt")
    cfg = OmegaConf.create(OmegaConf.to_container(trained.cfg))
    with open_dict(cfg):
        cfg.data.task, cfg.data.name = "copy", "copy"
    with pytest.raises(ValueError, match="data=copy, which has no gold word alignments"):
        check_run(dataclasses.replace(trained, cfg=cfg))
    with pytest.raises(ValueError, match="`max_sentences`"):
        run(_compose(f"run_dir={runs['transformer']}", "max_sentences=0"))
    with pytest.raises(ValueError, match="missing run_dir"):
        run(_compose())


def test_cli_refuses_an_rnn_decoder_in_one_line(runs, tmp_path):
    proc = run_module(
        "seq2seq.analysis.alignment_heads", f"run_dir={runs['rnn']}", f"out_dir={tmp_path / 'out'}",
        cwd=tmp_path, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model/decoder=rnn has no attention heads" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
