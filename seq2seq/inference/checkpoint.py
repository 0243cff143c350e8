"""Checkpoints: the one rule that finds them, the one reader, and a trained model rebuilt from the file alone.

A checkpoint written by ``seq2seq-train`` (Lightning's format) holds the weights (``state_dict``, keys
``model.…``), the resolved run config (``hyper_parameters.cfg``), both SentencePiece models (``tokenizers``)
and the best validation's results; so it works after being moved, with no other file.

Which checkpoint a path names (:func:`find_checkpoint`), for ``evaluate``, ``translate`` and ``influence``
alike: a file is itself; a run directory gives ``checkpoints/best.ckpt`` (best ``val/bleu``), else
``checkpoints/last.ckpt`` (a run that stopped before its first validation has only that one).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.encoding import PairEncoder
from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from seq2seq.models.seq2seq import EncoderDecoder

CHECKPOINTS = "checkpoints"
PREFERRED = ("best.ckpt", "last.ckpt")  # in a run directory: the first that exists
MODEL_PREFIX = "model."  # the LightningModule holds the EncoderDecoder as ``model``


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not written by this project's training."""


def find_checkpoint(path: str | Path | None, option: str = "ckpt_path") -> Path:
    """The checkpoint ``path`` names: a file, or in a run directory ``best.ckpt``, else ``last.ckpt``.

    Args:
        option: the option the path came from, named in the error messages.

    Raises:
        CheckpointError: nothing given, no such file or directory, or a directory without checkpoints.
    """
    usage = "pass a .ckpt file or a training run directory (holding checkpoints/best.ckpt or last.ckpt)"
    if path is None or str(path) == "":
        raise CheckpointError(f"missing {option}: {usage}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"{option}={path}: {path} does not exist (resolved to {path.resolve()}); {usage}"
        )
    for name in PREFERRED:
        if (path / CHECKPOINTS / name).is_file():
            return path / CHECKPOINTS / name
    raise CheckpointError(
        f"{option}={path}: {path} is a directory without {CHECKPOINTS}/best.ckpt or {CHECKPOINTS}/last.ckpt "
        f"(did its training run save one?); {usage}"
    )


def read_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", full: bool = False
) -> dict[str, Any]:
    """The checkpoint's dictionary, with a clear :class:`CheckpointError` for a file that cannot be read.

    Args:
        full: also unpickle the Python objects a training checkpoint carries for resuming (loop and random
            states; only for files one trusts), memory-mapped so the weights are not read yet. Otherwise
            only tensors and plain data are loaded (``weights_only``).
    """
    fix = "use the run's other checkpoint (checkpoints/best.ckpt or last.ckpt) or retrain"
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (resolved to {path.resolve()})")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (not a zip archive: the file is truncated, "
            f"corrupt or of another kind); {fix}"
        )
    damaged = _damaged_member(path)
    if damaged:
        raise CheckpointError(f"checkpoint {path} is corrupt: {damaged}; {fix}")
    map_location = _usable_device(map_location)
    try:
        if full:
            checkpoint = torch.load(path, map_location=map_location, weights_only=False, mmap=True)
        else:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} is incompatible: it holds Python objects beyond tensors and plain data, "
            "so it was not written by `seq2seq-train` (and is not unpickled, for safety)"
        ) from None
    except Exception as error:  # a damaged archive member, a storage that does not fit, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
            f"the file is corrupt; {fix}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} is incompatible: it is not a dictionary of training state")
    return checkpoint


def _damaged_member(path: Path) -> str:
    """Why the zip archive is damaged ("" when every member's CRC-32 matches): torch.load reads flipped or
    zeroed bytes inside a tensor without complaint, so the archive's own checksums are tested first."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"its archive cannot be read ({type(error).__name__}: {error})"
    return f"its part {bad} fails its checksum (bytes changed on disk or in transfer)" if bad else ""


def _usable_device(map_location: str | torch.device) -> str | torch.device:
    """``map_location``, or the CPU where it names a GPU this machine lacks (GPU-saved weights load anywhere)."""
    device = torch.device(map_location) if isinstance(map_location, str) else map_location
    if device.type == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return map_location


def non_finite_weights(state_dict: dict[str, Any], shown: int = 3) -> str:
    """The floating-point tensors holding NaN or inf ("" when all are finite), e.g. from a diverged training."""
    bad = [
        key
        for key, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all())
    ]
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"{', '.join(bad[:shown])}{more}" if bad else ""


def refuse_non_finite(path: Path, state_dict: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` if ``state_dict`` holds NaN or inf weights."""
    bad = non_finite_weights(state_dict)
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights (NaN or inf in {bad}): it was saved after training "
            "diverged; use an earlier checkpoint of the run (checkpoints/best.ckpt), or retrain with a lower "
            "optim.lr"
        )


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint: weights, the config it was trained with, its tokenizers.

    Attributes:
        path: the checkpoint file; cfg: its resolved run config.
        best_val_results: scores of the best validation the run had made when the file was written.
    """

    path: Path
    cfg: DictConfig
    model: EncoderDecoder
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    best_val_results: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def encoder(self) -> PairEncoder:
        """Text → ids as in training (the checkpoint's ``data.preprocess`` and ``data.reverse_source``)."""
        return PairEncoder.from_config(self.cfg.data, self.src_tokenizer, self.tgt_tokenizer)


def build_model(cfg: Any, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> EncoderDecoder:
    """The :class:`EncoderDecoder` a run config describes, for these tokenizers' vocabularies."""
    return EncoderDecoder.from_config(
        cfg.model, src_tokenizer.vocab_size, tgt_tokenizer.vocab_size, PAD_ID, BOS_ID, EOS_ID
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model of a checkpoint file (see :func:`find_checkpoint` for run directories), in eval mode.

    Raises:
        CheckpointError: the file is missing, not a readable checkpoint, or not one written by
            ``seq2seq-train`` (no tokenizers or config, or weights that do not fit its config).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, "cpu")
    needed = ("state_dict", "tokenizers", "hyper_parameters")
    missing = [key for key in needed if key not in checkpoint]
    if not missing and "cfg" not in checkpoint["hyper_parameters"]:
        missing = ["hyper_parameters.cfg"]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is incompatible: it lacks {', '.join(missing)}, so it was not written by "
            "`seq2seq-train`; train a model with it and pass that checkpoint"
        )
    try:
        cfg = OmegaConf.create(checkpoint["hyper_parameters"]["cfg"])
        src_tokenizer, tgt_tokenizer = (Tokenizer(checkpoint["tokenizers"][side]) for side in ("src", "tgt"))
        model = build_model(cfg, src_tokenizer, tgt_tokenizer)
    except Exception as error:  # a config from another version, a broken tokenizer
        raise CheckpointError(
            f"checkpoint {path} is incompatible: its saved config or tokenizers cannot rebuild the model "
            f"({type(error).__name__}: {' '.join(str(error).split())}); retrain with the current "
            "`seq2seq-train`"
        ) from None
    weights = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    refuse_non_finite(path, weights)
    problems = state_dict_mismatch(model.state_dict(), weights)
    if problems:
        raise CheckpointError(
            f"checkpoint {path} is incompatible: its weights do not fit the model its config describes "
            f"({problems}); was the checkpoint edited, or written by another version?"
        )
    model.load_state_dict(weights)
    return TrainedModel(
        path=path,
        cfg=cfg,
        model=model.to(_usable_device(map_location)).eval(),
        src_tokenizer=src_tokenizer,
        tgt_tokenizer=tgt_tokenizer,
        best_val_results=checkpoint.get("best_val_results", {}),
    )


def state_dict_mismatch(expected: dict[str, torch.Tensor], given: dict[str, Any], shown: int = 3) -> str:
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
