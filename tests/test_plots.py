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
