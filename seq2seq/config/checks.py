"""Config validation, once, before any data is read or model built: types, ranges and combinations.

:func:`validate_train`, :func:`validate_evaluate` and :func:`validate_translate` are called first by the entry
points. Types come from the structured configs of :mod:`seq2seq.config.schema`; the rules below are the
ranges and combinations no type can say. Every message names the option, the value, and what to do; a bad
value never surfaces minutes into training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seq2seq.config.schema import DecodingConfig, LoggerConfig, TrainConfig
from seq2seq.data.filters import Preprocess
from seq2seq.data.lengths import bucket_bounds
from seq2seq.data.standard_sets import FILE_SOURCES
from seq2seq.data.synthetic import TASKS
from seq2seq.data.tokenizer import MODEL_TYPES
from seq2seq.evaluation.tracking import LOGGERS, WANDB_MODES
from seq2seq.models import kernels, onednn
from seq2seq.models.choices import ARCHITECTURES, ATTENTION_NAMES, LOCAL, MULTIHEAD
from seq2seq.models.decoder import CONTEXT_MODES
from seq2seq.models.decoding import SEARCHES
from seq2seq.models.encoders import RNN_TYPES
from seq2seq.models.local_attention import LOCAL_MODES, LOCAL_SCORES
from seq2seq.training.teacher_forcing import FEEDBACK, SCHEDULES

SCHEDULERS = ("plateau", "none")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
SPLITS = ("test", "val")


def full_error() -> bool:
    """Whether the user asked for tracebacks of their own mistakes too (``HYDRA_FULL_ERROR=1``, as Hydra)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


class ConfigError(ValueError):
    """A config value that cannot work; the message names the option and what to do."""


def typed(cfg: Any, schema: type, where: str = "") -> DictConfig:
    """``cfg`` merged onto the structured config ``schema``: wrong types and unknown keys are refused."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=False)  # resolves and type-checks
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        reason = str(getattr(error, "msg", None) or error).splitlines()[0]
        raise ConfigError(
            f"option {where}{key}: {reason}; fix it on the command line or in its config file"
        ) from None
    return merged


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    _check(value in choices, f"{option}={value!r}: choose one of {', '.join(map(str, choices))}")


def _at_least(option: str, value: Any, low: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _check(value is not None and value >= low, f"{option}={value!r}: must be at least {low:g}")


def _fraction(option: str, value: float, closed: bool = True) -> None:
    ok = value is not None and 0.0 <= value <= 1.0 and (closed or value < 1.0)
    _check(ok, f"{option}={value!r}: must lie in [0, 1{']' if closed else ')'}")


def _length_buckets(option: str, edges: Any) -> None:
    try:
        bucket_bounds(edges, option)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_decoding(dec: Any, option: str = "decoding") -> None:
    """``decoding``: a known search, a beam of at least 1, a positive output budget."""
    _choice(option, dec.name, SEARCHES)
    _at_least(f"{option}.beam_size", dec.beam_size, 1)
    _at_least(f"{option}.max_length_ratio", dec.max_length_ratio, 0.0)
    _at_least(f"{option}.max_length_constant", dec.max_length_constant, 0.0)


def check_logger(logger: Any) -> None:
    """``logger``: a known tracker, and for W&B a known mode."""
    _choice("logger", logger.name, LOGGERS)
    if logger.name == "wandb":
        _choice("logger.mode", logger.mode, WANDB_MODES)


def check_transformer(model: Any) -> None:
    """Transformer sides: heads dividing ``d``, a positive feed-forward size; its own attention, and only it."""
    encoder, decoder, attention = model.encoder, model.decoder, model.attention.name
    for side, cfg in (("encoder", encoder), ("decoder", decoder)):
        if cfg.type == "transformer":
            _at_least(f"model.{side}.heads", cfg.heads, 1)
            _at_least(f"model.{side}.ff_size", cfg.ff_size, 1)
            _check(
                model.hidden_size % cfg.heads == 0 and model.hidden_size % 2 == 0,
                f"model.hidden_size={model.hidden_size} (the Transformer's d) must be even and divisible by "
                f"model.{side}.heads={cfg.heads}",
            )
    if decoder.type == "transformer":
        _check(
            attention == MULTIHEAD,
            f"model/attention={attention} does not apply to model/decoder=transformer (it has its own multi-head "
            "cross-attention): drop the model/attention override",
        )
    else:
        _check(
            attention != MULTIHEAD,
            "model/attention=multihead belongs to model/decoder=transformer; choose another attention for the "
            "recurrent decoder",
        )


def check_model(model: Any) -> None:
    _choice("model.encoder.type (model/encoder)", model.encoder.type, ARCHITECTURES)
    _choice("model.decoder.type (model/decoder)", model.decoder.type, ARCHITECTURES)
    _choice("model/encoder (model.encoder.rnn_type)", model.encoder.rnn_type, RNN_TYPES)
    _choice("model/attention (model.attention.name)", model.attention.name, ATTENTION_NAMES)
    check_transformer(model)
    if model.attention.name == LOCAL:
        _choice("model.attention.score", model.attention.score, LOCAL_SCORES)
        _choice("model.attention.mode", model.attention.mode, LOCAL_MODES)
        _at_least("model.attention.window", model.attention.window, 1)
    _choice("model.context", model.context, CONTEXT_MODES)
    _at_least("model.embedding_size", model.embedding_size, 1)
    _at_least("model.hidden_size", model.hidden_size, 1)
    _check(
        model.encoder.type == "transformer" or not model.encoder.bidirectional or model.hidden_size % 2 == 0,
        f"model.hidden_size={model.hidden_size} must be even for a bidirectional encoder (each direction gets "
        "hidden_size // 2 units); choose an even size or model.encoder.bidirectional=false",
    )
    _at_least("model.encoder.num_layers", model.encoder.num_layers, 1)
    _at_least("model.decoder.num_layers", model.decoder.num_layers, 1)
    _check(
        model.decoder.type == "transformer" or model.decoder.num_layers == model.encoder.num_layers,
        f"model.decoder.num_layers={model.decoder.num_layers} must equal model.encoder.num_layers="
        f"{model.encoder.num_layers}: the decoder starts from the encoder's final state of each layer",
    )
    _fraction("model.encoder.dropout", model.encoder.dropout, closed=False)
    _fraction("model.decoder.dropout", model.decoder.dropout, closed=False)
    _at_least("model.attention.size", model.attention.size, 1, allow_none=True)


def check_teacher_forcing(tf: Any) -> None:
    """``teacher_forcing``: the schedule's own parameters (Bengio et al. 2015)."""
    _choice("teacher_forcing", tf.schedule, SCHEDULES)
    _choice("teacher_forcing.feedback", tf.feedback, FEEDBACK)
    needs = {"constant": ("ratio",), "linear": ("k", "c", "min_ratio"), "exponential": ("k",)}
    for key in (*needs.get(tf.schedule, ()), *(("k",) if tf.schedule == "inverse_sigmoid" else ())):
        _check(tf[key] is not None, f"teacher_forcing.{key} is required by teacher_forcing={tf.schedule}")
    if tf.schedule == "constant":
        _fraction("teacher_forcing.ratio", tf.ratio)
    elif tf.schedule == "linear":
        _fraction("teacher_forcing.min_ratio", tf.min_ratio)
        _at_least("teacher_forcing.c", tf.c, 0.0)
    elif tf.schedule == "exponential":
        _check(0.0 < tf.k <= 1.0, f"teacher_forcing.k={tf.k}: exponential decay needs 0 < k <= 1")
    elif tf.schedule == "inverse_sigmoid":
        _at_least("teacher_forcing.k", tf.k, 1.0)


def check_data(data: Any) -> None:
    _choice("data.source", data.source, ("synthetic", *FILE_SOURCES))
    if data.source == "synthetic":
        _choice("data.task", data.task, TASKS)
        _at_least("data.test_min_len", data.test_min_len, 1, allow_none=True)
        _at_least("data.test_max_len", data.test_max_len, data.test_min_len or 1, allow_none=True)
    else:
        _check(data.dir is not None, f"data.dir is required by data={data.name}: the corpus directory")
        _choice("data.format", data.format, ("two_files", "tsv"))
    _choice("data.tokenizer.model_type", data.tokenizer.model_type, MODEL_TYPES)
    _at_least("data.tokenizer.vocab_size", data.tokenizer.vocab_size, 5)
    _at_least("data.batch.max_tokens", data.batch.max_tokens, 1)
    _at_least("data.batch.eval_max_tokens", data.batch.eval_max_tokens, 1)
    _at_least("data.max_words", data.max_words, 1, allow_none=True)
    _at_least("data.num_workers", data.num_workers, 0)
    Preprocess.from_config(data)  # its own checks (DataError, a ValueError naming the option)


def check_limits(trainer_cfg: Any) -> None:
    """Refuse training limits that train nothing (Lightning would test an untrained model as "completed")."""
    for key in ("max_epochs", "max_steps"):
        value = trainer_cfg.get(key)
        _check(
            value is None or value == -1 or value > 0,
            f"trainer.{key}={value!r} trains nothing: use a positive number (or -1 for no limit on {key}); "
            "to score an existing model use seq2seq-evaluate",
        )


def check_trainer_keys(trainer_cfg: Any) -> None:
    """Refuse a ``trainer.*`` key Lightning's ``Trainer`` does not take (e.g. ``+trainer.max_step=5``)."""
    import difflib
    import inspect

    from pytorch_lightning import Trainer

    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in trainer_cfg:
        if key == "_target_" or key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"did you mean trainer.{close[0]}? " if close else ""
        raise ConfigError(
            f"option trainer.{key}: not an argument of Lightning's Trainer; {hint}remove it or fix its name"
        )


def check_precision(trainer_cfg: Any) -> None:
    """Refuse mixed or half precision where training would run on the CPU."""
    precision, accelerator = str(trainer_cfg.precision), str(trainer_cfg.accelerator)
    gpu_here = torch.cuda.is_available() or torch.backends.mps.is_available()
    if (accelerator == "cpu" or (accelerator == "auto" and not gpu_here)) and not precision.startswith(
        ("32", "64")
    ):
        where = "" if accelerator == "cpu" else " (no GPU found)"
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU, but trainer.accelerator={accelerator} trains on the "
            f"CPU here{where}; use trainer.precision=32-true on the CPU, or trainer=gpu / trainer=ddp on a "
            "machine with a GPU"
        )


def _bootstrap(option: str, value: int) -> None:
    _check(
        value == 0 or value >= 2,
        f"{option}={value}: give the number of bootstrap resamples (e.g. 1000), or 0 for no intervals",
    )


def validate_train(cfg: Any) -> None:
    """Everything ``seq2seq-train`` reads, checked before the first file is opened.

    Raises:
        ConfigError (a ValueError): the first problem, naming the option and what to do.
    """
    typed_cfg = typed(cfg, TrainConfig)
    rules: list[Callable[[], None]] = [
        lambda: check_model(typed_cfg.model),
        lambda: check_data(typed_cfg.data),
        lambda: check_teacher_forcing(typed_cfg.teacher_forcing),
        lambda: check_decoding(typed_cfg.decoding),
        lambda: check_logger(typed_cfg.logger),
        lambda: _length_buckets("eval.length_buckets", typed_cfg.eval.length_buckets),
        lambda: _at_least("eval.attention_examples", typed_cfg.eval.attention_examples, 0),
        lambda: _check(
            not typed_cfg.eval.attention_heads or cfg.model.decoder.type == "transformer",
            "eval.attention_heads=true draws the Transformer decoder's cross-attention per layer and head; "
            f"model/decoder={cfg.model.decoder.type} has one attention: drop the option or use model/decoder=transformer",
        ),
        lambda: _check(
            not typed_cfg.eval.attention_heads or typed_cfg.eval.attention_examples > 0,
            "eval.attention_heads=true draws the heads of the eval.attention_examples sentences, which is 0: "
            "set eval.attention_examples to at least 1",
        ),
        lambda: _at_least("eval.max_positions", typed_cfg.eval.max_positions, 1),
        lambda: _bootstrap("eval.bootstrap", typed_cfg.eval.bootstrap),
        lambda: _check(
            0 < typed_cfg.optim.lr <= FLOAT32_MAX,
            f"optim.lr={typed_cfg.optim.lr}: must be a positive number a float32 can hold (at most 3.4e38; "
            "Adam's usual range is 1e-4 to 1e-2)",
        ),
        lambda: _at_least("guard.max_loss_ratio", typed_cfg.guard.max_loss_ratio, 1.0, allow_none=True),
        lambda: check_trainer_keys(cfg.trainer),
        lambda: check_limits(cfg.trainer),
        lambda: _choice("optim.scheduler", typed_cfg.optim.scheduler or "none", SCHEDULERS),
        lambda: _fraction("optim.label_smoothing", typed_cfg.optim.label_smoothing, closed=False),
        lambda: _at_least("threads", typed_cfg.threads, 1, allow_none=True),
        lambda: _at_least("speed.loss_chunk", typed_cfg.speed.loss_chunk, 0),
        lambda: _check(
            typed_cfg.speed.onednn_matmul in onednn.CHOICES,
            f"speed.onednn_matmul={typed_cfg.speed.onednn_matmul!r}: choose one of true, false, auto",
        ),
        lambda: _check(
            typed_cfg.speed.compiled_kernels in kernels.CHOICES,
            f"speed.compiled_kernels={typed_cfg.speed.compiled_kernels!r}: choose one of true, false, auto",
        ),
        lambda: check_precision(cfg.trainer),
    ]
    for rule in rules:
        rule()


def validate_evaluate(cfg: Any) -> None:
    """``seq2seq-evaluate``'s options (the checkpoint's own config was validated when it trained)."""
    _check(
        (cfg.run_dir is None) != (cfg.ckpt_path is None),
        "give exactly one of run_dir=<training run directory> or ckpt_path=<checkpoint file or run directory>",
    )
    _check(
        (cfg.src is None) == (cfg.ref is None),
        "give both src=<source file> and ref=<reference file>, or neither to score a split",
    )
    _choice("split", cfg.split, SPLITS)
    if cfg.length_buckets is not None:
        _length_buckets("length_buckets", cfg.length_buckets)
    _at_least("attention_examples", cfg.attention_examples, 0)
    _check(
        not cfg.get("attention_heads") or cfg.attention_examples > 0,
        "attention_heads=true draws the heads of the attention_examples sentences, which is 0: set "
        "attention_examples to at least 1",
    )
    _bootstrap("bootstrap", cfg.get("bootstrap", 0))
    _at_least("max_words", cfg.max_words, 1, allow_none=True)
    _at_least("batch_tokens", cfg.batch_tokens, 1, allow_none=True)
    _choice("accelerator", cfg.accelerator, ("auto", "cpu", "gpu"))
    _gpu_here("accelerator", cfg.accelerator, "gpu")
    if cfg.get("decoding") is not None:
        check_decoding(typed(cfg.decoding, DecodingConfig, "decoding."))
    check_logger(typed(cfg.logger, LoggerConfig, "logger."))


def validate_translate(cfg: Any) -> None:
    """``seq2seq-translate``'s options."""
    _check(
        not OmegaConf.is_missing(cfg, "ckpt_path"), "ckpt_path=<checkpoint file or run directory> is required"
    )
    _choice("long_lines", cfg.long_lines, ("error", "warn"))
    _choice("device", cfg.device, ("auto", "cpu", "cuda"))
    _gpu_here("device", cfg.device, "cuda")
    if cfg.get("dump_attention") is not None:
        check_writable_file("dump_attention", cfg.dump_attention)
    _check(
        not cfg.get("attention_heads") or cfg.get("dump_attention") is not None,
        "attention_heads=true writes the per-head weights into the attention file: add dump_attention=<file>",
    )
    _at_least("max_words", cfg.max_words, 1, allow_none=True)
    _at_least("batch_tokens", cfg.batch_tokens, 1, allow_none=True)
    if cfg.get("decoding") is not None:
        check_decoding(typed(cfg.decoding, DecodingConfig, "decoding."))


def _gpu_here(option: str, value: str, gpu: str) -> None:
    """``option=<gpu>`` only where PyTorch sees a GPU."""
    _check(
        value != gpu or torch.cuda.is_available(),
        f"{option}={gpu}: this machine has no GPU PyTorch can use (torch.cuda.is_available() is false); use "
        f"{option}=auto or {option}=cpu",
    )


def check_writable_file(option: str, value: Any) -> None:
    """``option`` names a file that can be written: not a directory, in a directory that exists."""
    path = Path(str(value))
    _check(
        not path.is_dir(),
        f"{option}={value}: is a directory; give a file name, e.g. {option}={path / 'out.json'}",
    )
    parent = path.parent if str(path.parent) else Path(".")
    _check(
        parent.is_dir(),
        f"{option}={value}: the directory {parent} does not exist; create it or choose another path",
    )
    _check(os.access(parent, os.W_OK), f"{option}={value}: the directory {parent} is not writable")
