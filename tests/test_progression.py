"""The progression's configs: variants at matched sizes, the sweep, and the length-generalisation experiment."""

import pytest
from hydra.core.hydra_config import HydraConfig

from seq2seq.config.checks import validate_train
from seq2seq.data.datamodule import load_raw_pairs
from seq2seq.data.lengths import words
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.train import train
from tests.conftest import TINY, compose_train

VARIANTS = ["none", "bahdanau", "luong_local", "transformer"]


def test_variants_have_parameter_counts_within_ten_percent(tmp_path):
    counts = {}
    for variant in VARIANTS:
        cfg = compose_train(tmp_path, f"+variant={variant}")
        validate_train(cfg)
        model = EncoderDecoder.from_config(cfg.model, 170, 190)  # about the toy task's vocabularies
        counts[variant] = sum(p.numel() for p in model.parameters())
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts
    cfg = compose_train(tmp_path, "+variant=transformer")
    assert (cfg.model.encoder.type, cfg.model.decoder.type, cfg.model.attention.name) == (
        "transformer",
        "transformer",
        "multihead",
    )


def test_sweep_and_experiment_axes(tmp_path):
    for group in ("sweep=progression", "experiment=length_generalisation"):
        compose_train(tmp_path, group)
        assert str(HydraConfig.get().sweeper.params["+variant"]).split(",") == VARIANTS
    compose_train(tmp_path, "sweep=progression")
    assert HydraConfig.get().sweeper.params.seed == "1,2,3"


def test_length_generalisation_trains_short_and_tests_long(tmp_path):
    cfg = compose_train(
        tmp_path, "experiment=length_generalisation", "data.sizes.train=200", "data.sizes.val=20",
        "data.sizes.test=200",
    )  # fmt: skip
    validate_train(cfg)
    splits = load_raw_pairs(cfg.data)
    assert max(words(s) for s, _ in splits["train"]) == 30 and max(words(s) for s, _ in splits["val"]) <= 30
    test_lengths = [words(s) for s, _ in splits["test"]]
    assert min(test_lengths) <= 10 and max(test_lengths) > 50
    assert sum(n > 30 for n in test_lengths) > 60  # about half the test set lies past the training lengths


@pytest.mark.parametrize("variant", ["luong_local", "transformer"])
def test_a_variant_trains(tmp_path, variant):
    small = ["model.encoder.ff_size=32", "model.decoder.ff_size=32"] if variant == "transformer" else []
    overrides = [*TINY, f"+variant={variant}", *small]
    results = train(compose_train(tmp_path, *overrides))
    assert results["status"] == "completed"
