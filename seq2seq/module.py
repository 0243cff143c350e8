"""The LightningModule: loss, teacher forcing, optimisation, decoding for validation/test, metrics and logging.

Validation and test decode every sentence and score the detokenized text at corpus level with sacrebleu;
under data parallelism the hypotheses of all ranks are gathered first, so the scores are exactly those of
a single process.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.batching import Batch
from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from seq2seq.models.search import Hypotheses, greedy_search, max_output_lengths
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.scoring import bleu_by_length, corpus_scores
from seq2seq.teacher_forcing import teacher_forcing_ratio


class Seq2SeqModule(pl.LightningModule):
    """Trains an :class:`EncoderDecoder` and scores it.

    Args:
        cfg: the composed run config (uses ``model``, ``optim``, ``teacher_forcing``, ``decoding``, ``eval``).
        src_tokenizer, tgt_tokenizer: SentencePiece tokenizers (saved inside checkpoints).
    """

    def __init__(self, cfg: DictConfig | dict, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> None:
        super().__init__()
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.cfg = cfg
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.model = EncoderDecoder.from_config(
            cfg.model, src_tokenizer.vocab_size, tgt_tokenizer.vocab_size, PAD_ID
        )
        self._outputs: list[tuple[list[int], list[str]]] = []
        self.test_results: dict[str, Any] = {}
        self.train_tokens = 0
        self.train_seconds = 0.0
        self._batch_start = 0.0

    # ---------------------------------------------------------------- training

    def loss(self, batch: Batch, ratio: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy over non-padding target tokens (optionally label-smoothed)."""
        logits, _ = self.model(
            batch.src,
            batch.src_lengths,
            batch.tgt_in,
            teacher_forcing_ratio=ratio,
            sample_feedback=self.cfg.teacher_forcing.get("feedback", "argmax") == "sample",
        )  # (B, T, V)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            batch.tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=float(self.cfg.optim.label_smoothing),
        )

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        ratio = teacher_forcing_ratio(self.cfg.teacher_forcing, self.global_step)
        loss = self.loss(batch, ratio)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        size = batch.src.size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/teacher_forcing_ratio", ratio, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._batch_start
        tokens = batch.num_target_tokens
        self.train_tokens += tokens
        self.train_seconds += seconds
        self.log(
            "train/tokens_per_s", tokens / max(seconds, 1e-9), prog_bar=True, batch_size=batch.src.size(0)
        )

    def configure_optimizers(self) -> Any:
        optim = self.cfg.optim
        optimizer = torch.optim.Adam(self.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        if optim.scheduler is None or optim.scheduler == "none":
            return optimizer
        if optim.scheduler != "plateau":
            raise ValueError(f"optim.scheduler={optim.scheduler!r}: choose 'plateau' or 'none'")
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=optim.plateau.factor,
            patience=optim.plateau.patience,
            min_lr=optim.min_lr,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/bleu"}}

    # ---------------------------------------------------------------- evaluation

    def decode(self, batch: Batch, return_attention: bool = False) -> Hypotheses:
        """Search (``decoding`` config) for a batch; returns token ids per sentence."""
        dec = self.cfg.decoding
        if dec.name != "greedy":
            raise ValueError(f"decoding={dec.name!r} is not available; choose decoding=greedy")
        max_lengths = max_output_lengths(batch.src_lengths, dec.max_length_ratio, dec.max_length_constant)
        return greedy_search(
            self.model,
            batch.src,
            batch.src_lengths,
            max_lengths,
            BOS_ID,
            EOS_ID,
            return_attention=return_attention,
        )

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss = self.loss(batch)
        self.log(f"{stage}/loss", loss, batch_size=batch.src.size(0), sync_dist=True)
        hyps = self.decode(batch)
        texts = [self.tgt_tokenizer.decode(tokens) for tokens in hyps.tokens]
        self._outputs.append((batch.indices.tolist(), texts))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def _gather_hypotheses(self) -> dict[int, str]:
        """Hypotheses of the whole split by example index, from every rank."""
        local = [
            (i, text) for indices, texts in self._outputs for i, text in zip(indices, texts, strict=True)
        ]
        self._outputs = []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            local = [item for part in gathered for item in part]
        return dict(local)

    def _score(self, stage: str) -> dict[str, Any]:
        split = "val" if stage == "val" else "test"
        pairs = self.trainer.datamodule.raw[split]
        by_index = self._gather_hypotheses()
        if len(by_index) != len(pairs):
            raise RuntimeError(f"{stage}: decoded {len(by_index)} of {len(pairs)} sentences")
        sources = [s for s, _ in pairs]
        references = [t for _, t in pairs]
        hypotheses = [by_index[i] for i in range(len(pairs))]
        scores = corpus_scores(hypotheses, references)
        for name, value in scores.items():
            self.log(f"{stage}/{name}", value, rank_zero_only=False, sync_dist=False)
        loss = self.trainer.callback_metrics.get(f"{stage}/loss")
        if loss is not None:
            self.log(f"{stage}/ppl", math.exp(min(float(loss), 50.0)))
        return {"sources": sources, "references": references, "hypotheses": hypotheses, "scores": scores}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._outputs = []
            self.log("val/bleu", 0.0)
            return
        self._score("val")

    def on_test_epoch_end(self) -> None:
        result = self._score("test")
        result["bleu_by_length"] = bleu_by_length(
            result["sources"], result["hypotheses"], result["references"], self.cfg.eval.length_buckets
        )
        self.test_results = result

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizers"] = {
            "src": self.src_tokenizer.model_proto,
            "tgt": self.tgt_tokenizer.model_proto,
        }

    @classmethod
    def load_portable(cls, path: str, map_location: str | torch.device = "cpu") -> Seq2SeqModule:
        """Load a checkpoint with the tokenizers and config saved inside it (no other files needed)."""
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        tokenizers = {side: Tokenizer(proto) for side, proto in checkpoint["tokenizers"].items()}
        module = cls(checkpoint["hyper_parameters"]["cfg"], tokenizers["src"], tokenizers["tgt"])
        module.load_state_dict(checkpoint["state_dict"])
        return module
