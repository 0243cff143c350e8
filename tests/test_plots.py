"""The PNG figures: BLEU by source length (gaps for empty buckets) and labelled attention heatmaps."""

import numpy as np
import pytest
from matplotlib.image import imread

from seq2seq.evaluation.plots import plot_attention, plot_bleu_by_length


def _rows(bleus):
    labels = ["1-10", "11-20", "21-30", "31+"][: len(bleus)]
    return [{"bucket": b, "n": 0 if v is None else 5, "bleu": v} for b, v in zip(labels, bleus, strict=True)]


def test_bleu_by_length_plot_is_a_png_and_empty_buckets_are_gaps(tmp_path):
    path = plot_bleu_by_length(
        {"test": _rows([40.0, None, 12.5, None]), "val": _rows([None, None, None, None])},
        tmp_path / "plots" / "bleu_by_length.png",
    )
    assert path == tmp_path / "plots" / "bleu_by_length.png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # something was drawn


def test_bleu_by_length_plot_needs_a_series(tmp_path):
    with pytest.raises(ValueError, match="at least one series"):
        plot_bleu_by_length({}, tmp_path / "x.png")


def test_attention_heatmap_grows_with_the_sentences_and_checks_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    small = plot_attention(
        rng.dirichlet(np.ones(3), size=2), ["▁a", "▁b", "c"], ["▁x", "</s>"], tmp_path / "s.png"
    )
    pieces = [f"▁w{i}" for i in range(40)]
    large = plot_attention(rng.dirichlet(np.ones(40), size=30), pieces, pieces[:30], tmp_path / "l.png")
    small_h, small_w = imread(small).shape[:2]
    large_h, large_w = imread(large).shape[:2]
    assert large_w > small_w and large_h > small_h
    with pytest.raises(ValueError, match=r"shape \(2, 3\) do not match 2 output and 4 source pieces"):
        plot_attention(np.ones((2, 3)) / 3, ["a", "b", "c", "d"], ["x", "y"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_intervals_are_drawn_around_bleu_by_length_and_position_accuracy(tmp_path):
    from matplotlib.image import imread

    from seq2seq.evaluation.plots import length_intervals, plot_bleu_by_length, plot_position_accuracy

    rows = [
        {"bucket": "1-10", "min_len": 1, "max_len": 10, "n": 30, "bleu": 40.0},
        {"bucket": "11+", "min_len": 11, "max_len": None, "n": 0, "bleu": None},
    ]
    with_ci = [{**rows[0], "bleu_ci": [30.0, 55.0]}, {**rows[1], "bleu_ci": None}]
    assert length_intervals({"a": with_ci, "b": rows}, ["1-10", "11+"]) == {
        "a": [[30.0, 55.0], None],
        "b": [None, None],
    }
    plain = imread(plot_bleu_by_length({"test": rows}, tmp_path / "plain.png"))
    bars = imread(plot_bleu_by_length({"test": with_ci}, tmp_path / "bars.png"))
    assert plain.shape == bars.shape and (plain != bars).any()
    curve = {"free": [90.0, 80.0, None]}
    plain = imread(plot_position_accuracy(curve, tmp_path / "p0.png"))
    band = imread(
        plot_position_accuracy(
            curve, tmp_path / "p1.png", intervals={"free": [[85.0, 94.0], [70.0, 88.0], None]}
        )
    )
    assert plain.shape == band.shape and (plain != band).any()
