"""The types of the run config: Hydra structured configs (dataclasses) mirroring ``conf/``.

``conf/*.yaml`` holds the values and a comment on every key; these dataclasses say what type each key has.
:func:`seq2seq.config.checks.validate_train` merges a composed config onto them (OmegaConf converts
``"3"`` to ``3`` and refuses ``"abc"`` for an int, naming the key) before checking ranges and combinations.
Sections whose options differ in their keys (``data``, ``teacher_forcing``, ``decoding``) declare the union of
those keys; the trainer's keys are Lightning's own and are checked by Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EncoderConfig:
    type: str = "rnn"  # rnn | transformer
    heads: int = 4  # transformer
    ff_size: int = 512  # transformer
    rnn_type: str = "gru"
    bidirectional: bool = True
    num_layers: int = 1
    dropout: float = 0.0


@dataclass
class AttentionConfig:
    name: str = "bahdanau"
    size: int | None = None
    score: str | None = None  # luong_local: dot | general | concat
    mode: str | None = None  # luong_local: p | m
    window: int | None = None  # luong_local: D
    reverse: bool | None = None  # luong_local: local-m counts p_t from the end; set from data.reverse_source


@dataclass
class DecoderConfig:
    type: str = "rnn"  # rnn | transformer
    heads: int = 4  # transformer
    ff_size: int = 512  # transformer
    num_layers: int = 1
    dropout: float = 0.0
    input_feeding: bool = True


@dataclass
class ModelConfig:
    embedding_size: int = 128
    hidden_size: int = 128
    context: str = "every_step"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


@dataclass
class SpeedConfig:
    fast_unroll: bool = True
    loss_chunk: int = 4096
    compile: bool = False
    step_weights: bool = True
    fused_optimizer: bool = True
    tanh_as_sigmoid: bool = True
    step_attention: bool = True
    fused_step: bool = True
    recompute_attention: bool = True
    compiled_kernels: bool | str = "auto"  # true | false | auto (where a C++ compiler builds them)
    keep_freed_memory: bool = True
    gru_kernel: bool = True
    onednn_matmul: bool | str = "auto"  # true | false | auto (by CPU: onednn.preferred)


@dataclass
class PlateauConfig:
    factor: float = 0.5
    patience: int = 1


@dataclass
class OptimConfig:
    lr: float = 0.003
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    scheduler: str | None = "plateau"
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    min_lr: float = 1.0e-5


@dataclass
class EvalConfig:
    length_buckets: list[int] = field(default_factory=lambda: [1, 11, 21, 31, 41, 51])
    attention_examples: int = 4
    attention_heads: bool = False
    max_positions: int = 60
    bootstrap: int = 1000


@dataclass
class DecodingConfig:
    name: str = "greedy"
    beam_size: int = 5
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_constant: float = 10
    refill: bool = True  # decode_stream: next batches' sentences take finished ones' rows


@dataclass
class TeacherForcingConfig:
    schedule: str = "always"
    ratio: float | None = None  # constant
    k: float | None = None  # linear, exponential, inverse_sigmoid
    c: float | None = None  # linear
    min_ratio: float | None = None  # linear
    feedback: str = "argmax"


@dataclass
class TokenizerConfig:
    model_type: str = "unigram"
    vocab_size: int = 8000


@dataclass
class BatchConfig:
    max_tokens: int = 2500
    eval_max_tokens: int = 12000


@dataclass
class PreprocessConfig:
    normalize: str | None = None
    lowercase: bool = False
    dedupe: bool = False
    min_words: int = 1
    max_ratio: float | None = None


@dataclass
class DataConfig:
    """The union of the keys of ``conf/data/*.yaml``: synthetic tasks, files, the Bible, hub sets."""

    name: str = "toy_translation"
    source: str = "synthetic"
    length_buckets: list[int] = field(default_factory=lambda: [1, 11, 21, 31, 41, 51])
    max_words: int | None = 100
    reverse_source: bool = False
    num_workers: int = 0
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    # synthetic
    task: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    min_len: int | None = None
    max_len: int | None = None
    test_min_len: int | None = None  # synthetic: the test split's own length range (null: min_len, max_len)
    test_max_len: int | None = None
    seed: int = 0
    symbols: int | None = None
    # files
    format: str = "two_files"
    dir: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    files: Any = None
    tsv: Any = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    hub: Any = None


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str | None = None
    entity: str | None = None
    mode: str | None = None
    group: str | None = None
    job_type: str | None = None
    init_timeout: float | None = None


@dataclass
class GuardConfig:
    non_finite: bool = True
    max_loss_ratio: float | None = 10.0


@dataclass
class TrainConfig:
    """``conf/train.yaml`` after composition (``trainer``, ``callbacks``, ``paths`` stay untyped)."""

    seed: int = 1234
    threads: int | None = None
    ckpt_path: str | None = None
    tags: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    teacher_forcing: TeacherForcingConfig = field(default_factory=TeacherForcingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    trainer: Any = None
    callbacks: Any = None
    paths: Any = None
