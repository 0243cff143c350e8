"""The LightningDataModule: raw pairs → validation → SentencePiece → ids → length-bucketed batches."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from seq2seq.data.batching import PairDataset, TokenBudgetBatchSampler, collate
from seq2seq.data.encoding import PairEncoder
from seq2seq.data.errors import DataError
from seq2seq.data.filters import Preprocess, normalize_pairs, preprocess_splits
from seq2seq.data.parallel import Pairs, read_split
from seq2seq.data.standard_sets import ensure_corpus
from seq2seq.data.synthetic import make_splits
from seq2seq.data.tokenizer import Tokenizer, load_or_train

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def test_lengths(data_cfg: Any) -> dict[str, tuple[int, int]] | None:
    """``data.test_min_len``/``test_max_len`` (each null: the training range) as ``make_splits``'s ``lengths``."""
    low, high = data_cfg.get("test_min_len"), data_cfg.get("test_max_len")
    if low is None and high is None:
        return None
    return {"test": (data_cfg.min_len if low is None else low, data_cfg.max_len if high is None else high)}


def load_raw_pairs(data_cfg: Any) -> dict[str, Pairs]:
    """Read or generate the three splits named by the ``data`` config (``conf/data/*.yaml``).

    ``data.source``: ``synthetic`` (generated), ``files`` (the user's files), ``bible`` (built by
    scripts/prepare_bible.py when missing) or ``huggingface`` (a local copy, else fetched once); see
    ``seq2seq.data.standard_sets``. Files are read in the layout ``data.format`` names.
    """
    if data_cfg.source == "synthetic":
        return make_splits(
            data_cfg.task,
            {split: int(data_cfg.sizes[split]) for split in SPLITS},
            min_len=data_cfg.min_len,
            max_len=data_cfg.max_len,
            seed=data_cfg.seed,
            vocab_size=data_cfg.get("symbols", 50),
            lengths=test_lengths(data_cfg),
        )
    ensure_corpus(data_cfg)
    return {split: read_split(data_cfg, split) for split in SPLITS}


def load_split(data_cfg: Any, split: str) -> Pairs:
    """One split's pairs as a model trained on ``data_cfg`` saw them: read or generated, then normalised and
    lower-cased as ``data.preprocess`` says (val and test are never filtered)."""
    options = Preprocess.from_config(data_cfg)
    return normalize_pairs(load_raw_pairs(data_cfg)[split], options.normalize, options.lowercase)


def eval_loader(dataset: PairDataset, max_tokens: int, num_workers: int = 0) -> DataLoader:
    """Evaluation batches in length order under a token budget (``data.batch.eval_max_tokens``)."""
    sampler = TokenBudgetBatchSampler(dataset.lengths(), max_tokens, shuffle=False)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


class Seq2SeqDataModule(pl.LightningDataModule):
    """Builds tokenizers and encoded splits once (``setup``) and serves token-budget batches.

    Args:
        data_cfg: the ``data`` config node.
        cache_dir: where trained tokenizers are cached.
        seed: shuffling seed for training batches.
    """

    def __init__(self, data_cfg: Any, cache_dir: str | Path, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.num_workers = num_workers
        self.raw: dict[str, Pairs] = {}
        self.datasets: dict[str, PairDataset] = {}
        self.src_tokenizer: Tokenizer | None = None
        self.tgt_tokenizer: Tokenizer | None = None
        self.encoder: PairEncoder | None = None
        self.filter_counts: dict[str, int] = {}  # pairs each data.preprocess filter changed or dropped

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        raw = load_raw_pairs(self.cfg)
        for split in SPLITS:
            if not raw[split]:
                raise DataError(f"the {split} split of data={self.cfg.name} is empty")
        raw, self.filter_counts = preprocess_splits(raw, Preprocess.from_config(self.cfg))
        self.raw = raw
        settings = dict(self.cfg.tokenizer)
        self.src_tokenizer = load_or_train([s for s, _ in raw["train"]], settings, self.cache_dir, "src")
        self.tgt_tokenizer = load_or_train([t for _, t in raw["train"]], settings, self.cache_dir, "tgt")
        self.encoder = PairEncoder.from_config(self.cfg, self.src_tokenizer, self.tgt_tokenizer)
        for split in SPLITS:
            self.datasets[split] = self.encoder.encode(raw[split])
        log.info(
            "data %s: %s pairs; vocab src %d, tgt %d",
            self.cfg.name,
            {s: len(d) for s, d in self.datasets.items()},
            self.src_tokenizer.vocab_size,
            self.tgt_tokenizer.vocab_size,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = TokenBudgetBatchSampler(dataset.lengths(), self.cfg.batch.max_tokens, seed=self.seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.datasets["val"], self.cfg.batch.eval_max_tokens, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return eval_loader(self.datasets["test"], self.cfg.batch.eval_max_tokens, self.num_workers)
