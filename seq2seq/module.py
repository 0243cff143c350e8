"""The LightningModule: loss, teacher forcing, optimisation, decoding for validation/test, metrics and logging.

Validation and test decode every sentence (``decoding=greedy|beam``) and score the detokenized text at
corpus level with sacrebleu, overall and by source length; the loss is the corpus mean over target tokens.
Under data parallelism each rank decodes its own sentences and the per-sentence outputs of all ranks are
gathered before scoring, so every score (loss included) is exactly that of a single process. A trained
module also translates raw sentences (:meth:`Seq2SeqModule.translate`) and reloads from a checkpoint file
alone
(:meth:`Seq2SeqModule.load_portable`).
"""

from __future__ import annotations

import math
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.batching import Batch, Example, PairDataset, TokenBudgetBatchSampler, collate
from seq2seq.data.filters import Preprocess, normalize_pairs
from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from seq2seq.models.search import Hypotheses, beam_search, greedy_search, max_output_lengths
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.scoring import bleu_by_length, corpus_scores, position_accuracy
from seq2seq.teacher_forcing import teacher_forcing_ratio

DECODINGS = ("greedy", "beam")


@dataclass
class SentenceOutput:
    """What validation/test keep of one sentence until the split is scored (gathered from every rank).

    Attributes:
        index: position in the split; hypothesis: detokenized output of the search.
        entropy, steps: attention entropy summed over the hypothesis steps, and their number (0 without
            attention).
        free, forced: per reference token, whether the free-running / teacher-forced prediction was right.
        nll, tokens: summed cross-entropy of the reference (teacher-forced, EOS included) and its token count.
    """

    index: int
    hypothesis: str
    entropy: float
    steps: int
    free: list[bool]
    forced: list[bool]
    nll: float
    tokens: int


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not written by this project's training."""


@dataclass
class Translation:
    """One translated sentence.

    Attributes:
        source: the raw input; text: the detokenized hypothesis ("" for an empty input).
        source_pieces: SentencePiece pieces as fed to the encoder (reversed with ``data.reverse_source``).
        output_pieces: the hypothesis pieces, then ``</s>`` when the search ended with EOS.
        attention: ``(len(output_pieces), len(source_pieces))`` weights; None for ``attention=none`` or
            when not asked for.
    """

    source: str
    text: str
    source_pieces: list[str]
    output_pieces: list[str]
    attention: torch.Tensor | None = None


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy ``-Σ_j α_ij log α_ij`` (nats) of each target step's attention: ``(T, S)`` → ``(T,)``.

    0 when a step attends to one source token; ``log S`` when it spreads evenly.
    """
    return -torch.special.xlogy(weights, weights).sum(dim=-1)


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
        self._outputs: list[SentenceOutput] = []  # of the split being evaluated, this rank's sentences
        self.test_results: dict[str, Any] = {}
        self.val_results: dict[str, Any] = {}  # scores of the latest validation
        self.best_val_results: dict[str, Any] = {}  # of the validation with the highest val/bleu so far
        self.train_tokens = 0
        self.train_seconds = 0.0
        self._batch_start = 0.0

    # ---------------------------------------------------------------- training

    def loss(self, batch: Batch, ratio: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy over non-padding target tokens (optionally label-smoothed)."""
        return self.loss_and_logits(batch, ratio)[0]

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
        # Stepped by this module after each validation (on_validation_epoch_end), so the step is part of the
        # checkpoint written after it; Lightning's own epoch-end step would be lost when resuming there.
        config = {"scheduler": scheduler, "monitor": "val/bleu", "interval": "epoch", "strict": False}
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

    # ---------------------------------------------------------------- evaluation

    @property
    def has_attention(self) -> bool:
        return self.model.decoder.attention is not None

    def max_output_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        """Output budgets ``ceil(decoding.max_length_ratio · |x| + decoding.max_length_constant)``."""
        dec = self.cfg.decoding
        return max_output_lengths(src_lengths, dec.max_length_ratio, dec.max_length_constant)

    def decode(self, batch: Batch, return_attention: bool = False) -> Hypotheses:
        """Search (the ``decoding`` config: greedy or beam) for a batch; returns token ids per sentence."""
        dec = self.cfg.decoding
        if dec.name not in DECODINGS:
            raise ValueError(f"decoding={dec.name!r} is not available; choose one of {DECODINGS}")
        inputs = (
            self.model,
            batch.src,
            batch.src_lengths,
            self.max_output_lengths(batch.src_lengths),
            BOS_ID,
            EOS_ID,
        )
        if dec.name == "beam":
            return beam_search(
                *inputs,
                beam_size=int(dec.beam_size),
                alpha=float(dec.length_penalty),
                return_attention=return_attention,
            )
        return greedy_search(*inputs, return_attention=return_attention)

    def _eval_step(self, batch: Batch) -> None:
        token_loss, logits = self.loss_and_logits(batch, reduction="none")  # (B, T), (B, T, V)
        nll = token_loss.sum(dim=1).tolist()  # (B,)
        counts = batch.tgt_out.ne(PAD_ID).sum(dim=1).tolist()  # (B,)
        forced = logits.argmax(-1).eq(batch.tgt_out).tolist()  # (B, T): teacher-forced predictions right?
        hyps = self.decode(batch, return_attention=self.has_attention)
        attention = hyps.attention or [None] * len(hyps.tokens)
        references = batch.tgt_out.tolist()
        for row, (index, tokens, weights) in enumerate(
            zip(batch.indices.tolist(), hyps.tokens, attention, strict=True)
        ):
            entropy = 0.0 if weights is None else float(attention_entropy(weights).sum())
            steps = 0 if weights is None else weights.size(0)
            reference = references[row][: references[row].index(EOS_ID)]  # the reference tokens, no EOS
            free = [i < len(tokens) and tokens[i] == token for i, token in enumerate(reference)]
            self._outputs.append(
                SentenceOutput(
                    index=index,
                    hypothesis=self.tgt_tokenizer.decode(tokens),
                    entropy=entropy,
                    steps=steps,
                    free=free,
                    forced=forced[row][: len(reference)],
                    nll=nll[row],
                    tokens=counts[row],
                )
            )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def _gather_outputs(self) -> list[SentenceOutput]:
        """This split's per-sentence outputs from every rank, in split order (sums then do not depend on the
        ranks)."""
        local, self._outputs = self._outputs, []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            local = [item for part in gathered for item in part]
        return sorted(local, key=lambda out: out.index)

    def _score(self, stage: str) -> dict[str, Any]:
        """Corpus scores, BLEU by source length (``eval.length_buckets``) and attention entropy of a split."""
        split = "val" if stage == "val" else "test"
        pairs = self.trainer.datamodule.raw[split]
        outputs = self._gather_outputs()
        if [out.index for out in outputs] != list(range(len(pairs))):
            raise RuntimeError(
                f"{stage}: decoded {len({out.index for out in outputs})} distinct of {len(pairs)} sentences "
                f"({len(outputs)} outputs); every sentence must be decoded exactly once"
            )
        sources = [s for s, _ in pairs]
        references = [t for _, t in pairs]
        hypotheses = [out.hypothesis for out in outputs]
        scores = corpus_scores(hypotheses, references)
        loss = sum(out.nll for out in outputs) / max(sum(out.tokens for out in outputs), 1)
        logged = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), **scores}
        entropy = None
        steps = sum(out.steps for out in outputs)
        if self.has_attention and steps > 0:
            entropy = sum(out.entropy for out in outputs) / steps  # mean over all target steps of the split
            logged["attention_entropy"] = entropy
        for name, value in logged.items():
            # every rank holds the same value: the max over ranks keeps it exact (a mean may round)
            self.log(f"{stage}/{name}", value, sync_dist=True, reduce_fx="max")
        return {
            "sources": sources,
            "references": references,
            "hypotheses": hypotheses,
            "scores": scores,
            "attention_entropy": entropy,
            "bleu_by_length": bleu_by_length(sources, hypotheses, references, self.length_buckets),
            "position_accuracy": position_accuracy(
                [out.free for out in outputs], self.cfg.eval.max_positions
            ),
            "teacher_forced_position_accuracy": position_accuracy(
                [out.forced for out in outputs], self.cfg.eval.max_positions
            ),
        }

    @property
    def length_buckets(self) -> list[int]:
        """Lower edges of the source-length buckets (``eval.length_buckets``)."""
        return list(self.cfg.eval.length_buckets)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches only: nothing to score at corpus level
            self._outputs = []
            return
        result = self._score("val")
        self.val_results = {k: result[k] for k in ("scores", "bleu_by_length", "attention_entropy")}
        self.val_results["position_accuracy"] = result["position_accuracy"]
        best = self.best_val_results.get("scores", {}).get("bleu")
        if best is None or result["scores"]["bleu"] > best:
            self.best_val_results = self.val_results
        self._step_plateau(result["scores"]["bleu"])

    def on_test_epoch_end(self) -> None:
        self.test_results = self._score("test")

    # ---------------------------------------------------------------- translation

    def encode_sources(self, sentences: list[str]) -> PairDataset:
        """Token ids of raw sources as the data module makes them: normalised and lower-cased as
        ``data.preprocess`` says, reversed with ``data.reverse_source``; targets are empty."""
        options = Preprocess.from_config(self.cfg.data)
        pairs = normalize_pairs([(s, "") for s in sentences], options.normalize, options.lowercase)
        ids = self.src_tokenizer.encode_batch([source for source, _ in pairs])
        if self.cfg.data.get("reverse_source", False):
            ids = [row[::-1] for row in ids]
        return PairDataset([Example(i, row, []) for i, row in enumerate(ids)])

    def translate(
        self, sentences: list[str], return_attention: bool = False, max_tokens: int | None = None
    ) -> list[Translation]:
        """Translate raw sentences in order, batched by length under a token budget.

        Empty (or whitespace-only) sentences translate to "" without running the model, so outputs stay
        aligned with inputs.

        Args:
            max_tokens: batch budget (sentences × longest source); default ``data.batch.eval_max_tokens``.
        """
        results = [Translation(s, "", [], []) for s in sentences]
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        dataset = self.encode_sources([sentences[i] for i in todo])
        keep = [position for position, example in enumerate(dataset.examples) if example.src]
        if len(keep) < len(todo):  # nothing left after tokenization: nothing to translate either
            todo = [todo[p] for p in keep]
            dataset = PairDataset([Example(i, dataset[p].src, []) for i, p in enumerate(keep)])
        if not todo:
            return results
        budget = max_tokens or int(self.cfg.data.batch.eval_max_tokens)
        # one process decodes everything here: no sharding even under DDP
        sampler = TokenBudgetBatchSampler(dataset.lengths(), budget, shuffle=False, num_replicas=1, rank=0)
        was_training = self.training
        self.eval()
        try:
            for indices in sampler:
                batch = collate([dataset[i] for i in indices]).to(self.device)
                hyps = self.decode(batch, return_attention=return_attention)
                attention = hyps.attention or [None] * len(indices)
                budgets = self.max_output_lengths(batch.src_lengths).tolist()
                for position, tokens, weights, budget in zip(
                    indices, hyps.tokens, attention, budgets, strict=True
                ):
                    ended = len(tokens) < budget  # only EOS stops a search before its budget
                    results[todo[position]] = Translation(
                        source=sentences[todo[position]],
                        text=self.tgt_tokenizer.decode(tokens),
                        source_pieces=self.src_tokenizer.pieces(dataset[position].src),
                        output_pieces=self.tgt_tokenizer.pieces(tokens) + (["</s>"] if ended else []),
                        attention=weights,
                    )
        finally:
            self.train(was_training)
        return results

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizers"] = {
            "src": self.src_tokenizer.model_proto,
            "tgt": self.tgt_tokenizer.model_proto,
        }
        checkpoint["best_val_results"] = self.best_val_results

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_results = checkpoint.get("best_val_results", self.best_val_results)

    @classmethod
    def load_portable(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Seq2SeqModule:
        """Load a checkpoint with the tokenizers and config saved inside it (no other files needed).

        Raises:
            CheckpointError: the file is missing, not a readable checkpoint, or not one written by
                ``seq2seq.train`` (no tokenizers or config, or weights that do not fit its config).
        """
        path = Path(path)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise CheckpointError(
                f"checkpoint {path} {what} (resolved to {path.resolve()}); pass a .ckpt file, "
                "e.g. <run_dir>/checkpoints/best.ckpt"
            )
        fix = "use the run's other checkpoint (checkpoints/best.ckpt or last.ckpt) or retrain"
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"checkpoint {path} is not a PyTorch checkpoint (not a zip archive: the file is truncated, "
                f"corrupt or of another kind); {fix}"
            )
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"checkpoint {path} is incompatible: it holds Python objects beyond tensors and plain data, "
                "so it was not written by `python -m seq2seq.train` (and is not unpickled, for safety)"
            ) from None
        except Exception as error:  # a damaged archive member, a storage that does not fit, ...
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
                f"the file is corrupt; {fix}"
            ) from None
        needed = ("state_dict", "tokenizers", "hyper_parameters")
        missing = [key for key in needed if not isinstance(checkpoint, dict) or key not in checkpoint]
        if not missing and "cfg" not in checkpoint["hyper_parameters"]:
            missing = ["hyper_parameters.cfg"]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} is incompatible: it lacks {', '.join(missing)}, so it was not written by "
                "`python -m seq2seq.train`; train a model with it and pass that checkpoint"
            )
        try:
            tokenizers = {side: Tokenizer(checkpoint["tokenizers"][side]) for side in ("src", "tgt")}
            module = cls(checkpoint["hyper_parameters"]["cfg"], tokenizers["src"], tokenizers["tgt"])
        except Exception as error:  # a config from another version, a broken tokenizer
            raise CheckpointError(
                f"checkpoint {path} is incompatible: its saved config or tokenizers cannot rebuild the model "
                f"({type(error).__name__}: {' '.join(str(error).split())}); retrain with the current "
                "`python -m seq2seq.train`"
            ) from None
        problems = _state_dict_mismatch(module.state_dict(), checkpoint["state_dict"])
        if problems:
            raise CheckpointError(
                f"checkpoint {path} is incompatible: its weights do not fit the model its config describes "
                f"({problems}); was the checkpoint edited, or written by another version?"
            )
        module.load_state_dict(checkpoint["state_dict"])
        module.best_val_results = checkpoint.get("best_val_results", {})
        return module.eval()


def _state_dict_mismatch(expected: dict[str, torch.Tensor], given: dict[str, Any], shown: int = 3) -> str:
    """Missing, unexpected and wrongly shaped weights of a checkpoint for a model ("" when they fit)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{key} {tuple(given[key].shape)} vs {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(given))
        if tuple(given[key].shape) != tuple(expected[key].shape)
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("checkpoint vs config shape", shapes),
    ):
        if items:
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            parts.append(f"{label}: {', '.join(items[:shown])}{more}")
    return "; ".join(parts)
