"""The LightningModule: loss, teacher forcing, optimisation, and the validation/test steps.

Validation and test score each batch teacher-forced, then decode all of the split's batches in one stream
(:func:`~seq2seq.models.decoding.decode_stream`) into per-sentence outputs; these are gathered from every
rank and scored once at corpus level (:func:`~seq2seq.evaluation.scoring.score_split`), so every score (loss
included) is exactly that of a single process (the attention entropy up to float rounding: each rank's rows
are refilled from its own batches). Batches carry their text, so the module scores whatever loader it is given
(the data module's, or ``evaluate``'s).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.batching import Batch
from seq2seq.data.encoding import PairEncoder
from seq2seq.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from seq2seq.evaluation.alignment import AlignmentCounts, batch_alignments
from seq2seq.evaluation.head_alignment import Key, batch_head_alignments, has_heads
from seq2seq.evaluation.scoring import SentenceOutput, SplitScores, score_split
from seq2seq.inference.checkpoint import build_model
from seq2seq.inference.translator import Translator
from seq2seq.models import kernels, onednn
from seq2seq.models.attention import AdditiveScore, attention_entropy
from seq2seq.models.decoder import RecurrentDecoder, StackedCell
from seq2seq.models.decoding import Decoding, decode_stream
from seq2seq.models.encoders import RecurrentEncoder
from seq2seq.models.search import Hypotheses
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.models.unroll import compile_seconds
from seq2seq.training.chunked_loss import linear_cross_entropy
from seq2seq.training.teacher_forcing import teacher_forcing_ratio

log = logging.getLogger(__name__)


def score_run_split(
    cfg: DictConfig, outputs: list[SentenceOutput], bootstrap: bool, scored: SplitScores | None = None
) -> SplitScores:
    """:func:`score_split` with the run's buckets, positions and (when ``bootstrap``) ``eval.bootstrap``
    resamples (checkpoints of older runs have no ``eval.bootstrap``: none); ``scored``: the same outputs scored
    before, whose sacrebleu statistics are reused."""
    resamples = int(cfg.eval.get("bootstrap", 0)) if bootstrap else 0
    statistics = None if scored is None else scored.statistics
    return score_split(
        outputs, list(cfg.eval.length_buckets), int(cfg.eval.max_positions), resamples, statistics
    )


def gold_alignments(
    model: EncoderDecoder,
    batch: Batch,
    cfg: DictConfig,
    tokenizers: tuple[Tokenizer, Tokenizer],
    per_head: bool,
) -> tuple[list[AlignmentCounts | None], list[dict[Key, AlignmentCounts | None] | None]]:
    """Per sentence of a toy batch, its attention against the gold alignment (``evaluation/alignment.py``) and,
    with ``per_head`` and a Transformer decoder, per layer and head (``evaluation/head_alignment.py``); the
    overall counts are then the last layer's head average of those, not a second forward pass."""
    if per_head and has_heads(model):
        heads = batch_head_alignments(model, batch, cfg.data, *tokenizers)
        last = (len(model.decoder.layers) - 1, None)
        return [None if entry is None else entry[last] for entry in heads], heads
    return batch_alignments(model, batch, cfg.data, *tokenizers), [None] * len(batch.sources)


@dataclass
class TeacherForced:
    """Per sentence of a batch, what its teacher-forced pass gave: summed cross-entropy and token count of the
    reference, whether each forced prediction was right, and the attention against the gold alignment."""

    nll: list[float]
    tokens: list[int]
    forced: list[list[bool]]
    alignment: list[AlignmentCounts | None]
    head_alignment: list[dict[Key, AlignmentCounts | None] | None]


def sentence_outputs(
    batch: Batch, hyps: Hypotheses, forced_pass: TeacherForced, tgt_tokenizer: Tokenizer
) -> list[SentenceOutput]:
    """Each sentence of a decoded batch with its teacher-forced pass: what the split's scores are made of."""
    attention = hyps.attention or [None] * len(hyps.tokens)
    references = batch.tgt_out.tolist()
    outputs = []
    for row, (index, tokens, weights) in enumerate(
        zip(batch.indices.tolist(), hyps.tokens, attention, strict=True)
    ):
        reference = references[row][: references[row].index(EOS_ID)]  # the reference tokens, no EOS
        outputs.append(
            SentenceOutput(
                index=index,
                source=batch.sources[row],
                reference=batch.references[row],
                hypothesis=tgt_tokenizer.decode(tokens),
                entropy=0.0 if weights is None else float(attention_entropy(weights).sum()),
                steps=0 if weights is None else weights.size(0),
                free=[i < len(tokens) and tokens[i] == token for i, token in enumerate(reference)],
                forced=forced_pass.forced[row][: len(reference)],
                nll=forced_pass.nll[row],
                tokens=forced_pass.tokens[row],
                alignment=forced_pass.alignment[row],
                head_alignment=forced_pass.head_alignment[row],
            )
        )
    return outputs


TOKENS_WINDOW = 50  # batches over which train/tokens_per_s is averaged (total tokens / total seconds)


class Seq2SeqModule(pl.LightningModule):
    """Trains an :class:`EncoderDecoder` and scores it.

    Args:
        cfg: the composed run config (reads ``model``, ``optim``, ``teacher_forcing``, ``decoding``, ``eval``;
            ``data`` for the text encoding of attention maps).
        src_tokenizer, tgt_tokenizer: SentencePiece tokenizers (saved inside checkpoints).
        model: an already built (e.g. trained) model; by default a new one from ``cfg.model``.
    """

    def __init__(
        self,
        cfg: DictConfig | dict,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        model: EncoderDecoder | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        # in the checkpoint only: train.py logs the config to the trackers once (tracking.log_config)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)}, logger=False)
        self.cfg = cfg
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.model = model if model is not None else build_model(cfg, src_tokenizer, tgt_tokenizer)
        speed = cfg.get("speed") or {}  # configs saved before the speed node existed: the defaults
        set_model_speed(self.model, speed)
        self._compile_reported = False
        self.loss_chunk = int(speed.get("loss_chunk", 4096))  # 0: the full (B, T, V) logits
        self.fused_optimizer = bool(speed.get("fused_optimizer", False))
        self.decoding = Decoding.from_config(cfg.decoding)
        self._outputs: list[SentenceOutput] = []  # of the split being evaluated, this rank's sentences
        # this rank's batches of the split, scored teacher-forced, not yet decoded
        self._kept: list[tuple[Batch, TeacherForced]] = []
        self._scored: list[SentenceOutput] = []  # the last split scored, every rank's sentences
        self.test_results: SplitScores | None = None
        self.val_results: dict[str, Any] = {}  # of the latest validation (SplitScores.summary())
        self.best_val_results: dict[str, Any] = {}  # of the validation with the highest val/bleu so far
        self.train_tokens = 0
        self.train_seconds = 0.0
        self._batch_start = 0.0
        self._fit_start = time.perf_counter()
        self._recent: deque[tuple[int, float]] = deque(maxlen=TOKENS_WINDOW)  # (tokens, seconds) per batch

    @property
    def has_attention(self) -> bool:
        return self.model.decoder.attention is not None

    def translator(self) -> Translator:
        """Raw text in, translations out, with this module's model, tokenizers and decoding."""
        encoder = PairEncoder.from_config(self.cfg.data, self.src_tokenizer, self.tgt_tokenizer)
        return Translator(self.model, encoder, self.decoding, self.cfg.data.batch.eval_max_tokens)

    # ---------------------------------------------------------------- training

    def loss(self, batch: Batch, ratio: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy over non-padding target tokens (optionally label-smoothed).

        Pure teacher forcing, ``speed.loss_chunk`` > 0: in chunks of tokens (chunked_loss.py; same loss, gradients).
        """
        if ratio < 1.0 or self.loss_chunk <= 0:
            return self.loss_and_logits(batch, ratio)[0]
        features, _ = self.model(batch.src, batch.src_lengths, batch.tgt_in, features=True)  # (B, T, H)
        decoder = self.model.decoder
        return linear_cross_entropy(
            decoder.dropout(features).reshape(-1, features.size(-1)),
            decoder.generator,
            batch.tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=float(self.cfg.optim.label_smoothing),
            chunk=self.loss_chunk,
            use_onednn=self.model.onednn_matmul,  # set by set_model_speed in __init__
            compiled=self.model.compiled_kernels,
        )

    def loss_and_logits(
        self, batch: Batch, ratio: float = 1.0, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss — mean over non-padding target tokens, or with ``reduction="none"`` per token ``(B, T)``
        (0 at padding) — and the logits ``(B, T, V)`` it was computed from."""
        logits, _ = self.model(
            batch.src,
            batch.src_lengths,
            batch.tgt_in,
            teacher_forcing_ratio=ratio,
            sample_feedback=self.cfg.teacher_forcing.get("feedback", "argmax") == "sample",
        )  # (B, T, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            batch.tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=float(self.cfg.optim.label_smoothing),
            reduction=reduction,
        )
        if reduction == "none":
            loss = loss.view_as(batch.tgt_out)  # (B, T)
        return loss, logits

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        ratio = teacher_forcing_ratio(self.cfg.teacher_forcing, self.global_step)
        loss = self.loss(batch, ratio)
        size = batch.src.size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/teacher_forcing_ratio", ratio, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._batch_start
        tokens = batch.num_target_tokens
        self.train_tokens += tokens
        self.train_seconds += seconds
        self._recent.append((tokens, seconds))  # smoothed: one batch's rate swings with its length
        rate = sum(t for t, _ in self._recent) / max(sum(s for _, s in self._recent), 1e-9)
        self.log("train/tokens_per_s", rate, prog_bar=True, batch_size=batch.src.size(0))
        if self.model.compile_step and not self._compile_reported and compile_seconds() is not None:
            self._compile_reported = True  # the first compiled batch: tracing and compilation included
            log.info("speed.compile: the decoder step compiled in %.1f s (first call)", compile_seconds())
            self.log("speed/compile_s", compile_seconds(), batch_size=batch.src.size(0))

    def configure_optimizers(self) -> Any:
        optim = self.cfg.optim
        optimizer = adam(self, optim.lr, optim.weight_decay, self.fused_optimizer)
        if optim.scheduler in (None, "none"):
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=optim.plateau.factor,
            patience=optim.plateau.patience,
            min_lr=optim.min_lr,
        )
        # Stepped by this module after each validation (on_validation_epoch_end), so the step is part of the
        # checkpoint written after it; Lightning's own epoch-end step would be lost when resuming there.
        config = {"scheduler": scheduler, "monitor": "val/bleu", "interval": "epoch", "strict": False}
        config["name"] = "train/lr"  # LearningRateMonitor's key (without a scheduler: lr-Adam)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's epoch-end step: nothing, the plateau scheduler steps after each validation."""

    def _step_plateau(self, bleu: float) -> None:
        """``optim.plateau``: after each validation of a fit, the learning rate drops if val/bleu stalls."""
        if self.trainer.state.fn != "fit":
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(bleu)

    # ---------------------------------------------------------------- validation and test

    def _eval_step(self, batch: Batch) -> None:
        """The teacher-forced half of a batch's scores (loss, forced accuracy, gold alignment); the batch is kept
        and decoded at the end of the split with the others (:meth:`_decode_kept`)."""
        token_loss, logits = self.loss_and_logits(batch, reduction="none")  # (B, T), (B, T, V)
        forced = logits.max(-1).indices.eq(batch.tgt_out).tolist()  # (B, T): forced predictions right?
        tokenizers = (self.src_tokenizer, self.tgt_tokenizer)  # per head at test only: one pass per split
        gold, heads = gold_alignments(self.model, batch, self.cfg, tokenizers, self.trainer.testing)
        forced_pass = TeacherForced(
            nll=token_loss.sum(dim=1).tolist(),  # (B,)
            tokens=batch.tgt_out.ne(PAD_ID).sum(dim=1).tolist(),  # (B,)
            forced=forced,
            alignment=gold,
            head_alignment=heads,
        )
        self._kept.append((batch, forced_pass))

    def _decode_kept(self) -> None:
        """Decode every batch this rank kept of the split in one stream — finished sentences' rows taken by the
        next batches' sentences (``decoding.refill``, :func:`~seq2seq.models.decoding.decode_stream`): the
        same outputs as batch by batch, about a quarter faster on the Bible dev set — into per-sentence outputs."""
        kept, self._kept = self._kept, []
        searches = decode_stream(
            self.model, [batch for batch, _ in kept], self.decoding, return_attention=self.has_attention
        )
        for (batch, hyps), (_, forced_pass) in zip(searches, kept, strict=True):
            self._outputs.extend(sentence_outputs(batch, hyps, forced_pass, self.tgt_tokenizer))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs, self._kept = [], []

    on_test_epoch_start = on_validation_epoch_start

    def _gather_outputs(self, expected: int, stage: str) -> list[SentenceOutput]:
        """This split's per-sentence outputs from every rank, in split order (sums then do not depend on the
        ranks); every one of its ``expected`` sentences exactly once."""
        self._decode_kept()
        local, self._outputs = self._outputs, []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            local = [item for part in gathered for item in part]
        outputs = sorted(local, key=lambda out: out.index)
        if [out.index for out in outputs] != list(range(expected)):
            raise RuntimeError(
                f"{stage}: decoded {len({out.index for out in outputs})} distinct of {expected} sentences "
                f"({len(outputs)} outputs); every sentence must be decoded exactly once"
            )
        return outputs

    def _score(self, stage: str, dataloader: Any, bootstrap: bool = True) -> SplitScores:
        """Score the split the ``dataloader`` served and log ``<stage>/loss``, ``/ppl``, ``/bleu``, …"""
        self._scored = self._gather_outputs(len(dataloader.dataset), stage)
        result = score_run_split(self.cfg, self._scored, bootstrap)
        for name, value in result.logged().items():
            # every rank holds the same value: the max over ranks keeps it exact (a mean may round)
            self.log(f"{stage}/{name}", value, sync_dist=True, reduce_fx="max")
        return result

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches only: nothing to score at corpus level
            self._outputs, self._kept = [], []
            return
        # intervals only for a validation that becomes the best (the one results.json reports)
        result = self._score("val", self.trainer.val_dataloaders, bootstrap=False)
        # wall time since this process started fitting, validation included (time-to-BLEU curves)
        elapsed = time.perf_counter() - self._fit_start
        self.log("val/elapsed_s", elapsed, sync_dist=True, reduce_fx="max")
        self.val_results = result.summary()
        best = self.best_val_results.get("scores", {}).get("bleu")
        if best is None or result.scores["bleu"] > best:
            self.best_val_results = score_run_split(self.cfg, self._scored, True, result).summary()
        self._step_plateau(result.scores["bleu"])

    def on_test_epoch_end(self) -> None:
        self.test_results = self._score("test", self.trainer.test_dataloaders)

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizers"] = {
            "src": self.src_tokenizer.model_proto,
            "tgt": self.tgt_tokenizer.model_proto,
        }
        checkpoint["best_val_results"] = self.best_val_results

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_results = checkpoint.get("best_val_results", self.best_val_results)


def adam(module: pl.LightningModule, lr: float, weight_decay: float, fused: bool) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) over ``module``'s parameters; ``fused`` (``speed.fused_optimizer``): PyTorch's fused
    kernel where the parameters live on CPU or CUDA, one pass over each parameter per update instead of a dozen
    elementwise ops, the same steps within float rounding."""
    use_fused = True if fused and module.device.type in ("cpu", "cuda") else None
    return torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay, fused=use_fused)


def set_model_speed(model: Any, speed: Any) -> None:
    """The model-side ``speed.*`` switches, each absent one at its default."""
    model.fast_unroll = bool(speed.get("fast_unroll", True))
    model.compile_step = bool(speed.get("compile", False))
    model.step_weights = bool(speed.get("step_weights", True))
    model.step_attention = bool(speed.get("step_attention", True))
    model.fused_step = bool(speed.get("fused_step", True))
    model.onednn_matmul = onednn.wanted(speed.get("onednn_matmul", "auto"))
    model.compiled_kernels = kernel_on = kernels.wanted(speed.get("compiled_kernels", "auto"))
    for layer in model.modules():
        if isinstance(layer, AdditiveScore):
            layer.tanh_as_sigmoid = bool(speed.get("tanh_as_sigmoid", True))
            layer.recompute_gates = bool(speed.get("recompute_attention", True))
            layer.compiled_kernels = kernel_on
        if isinstance(layer, RecurrentEncoder):
            layer.gru_kernel = bool(speed.get("gru_kernel", True))
            layer.onednn_matmul, layer.compiled_kernels = model.onednn_matmul, kernel_on
        if isinstance(layer, (RecurrentDecoder, StackedCell)):
            layer.onednn_matmul = model.onednn_matmul
