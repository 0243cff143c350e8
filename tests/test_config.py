"""Config validation: every bad value is refused before data or model, with a message naming the option."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq.config.checks import ConfigError, validate_evaluate, validate_train, validate_translate
from seq2seq.train import train
from tests.conftest import CONF, compose_train


def test_the_shipped_configs_pass(tiny_cfg, tmp_path):
    validate_train(tiny_cfg())
    for group in ("teacher_forcing=linear", "teacher_forcing=exponential", "teacher_forcing=inverse_sigmoid"):
        validate_train(
            tiny_cfg(group, "decoding=beam", "model/attention=luong_general", "model/encoder=lstm")
        )
    for data in ("parallel_text", "bible_en_es", "multi30k_de_en", "iwslt14_de_en"):
        validate_train(compose_train(tmp_path, f"data={data}", "data.dir=/nowhere", "logger=wandb"))
    validate_train(compose_train(tmp_path, "data=sort", "sweep=hidden_size"))
    validate_train(compose_train(tmp_path, "experiment=bible_en_es", "trainer.accelerator=cpu"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher_forcing=constant", "teacher_forcing.ratio=1.5"], r"teacher_forcing\.ratio=1\.5: must lie in \[0, 1\]"),
        (["teacher_forcing=exponential", "teacher_forcing.k=1.5"], r"teacher_forcing\.k=1\.5: exponential"),
        (["teacher_forcing=inverse_sigmoid", "teacher_forcing.k=0.5"], r"teacher_forcing\.k=0\.5: must be at least 1"),
        (["teacher_forcing.schedule=cosine"], r"teacher_forcing='cosine': choose one of always"),
        (["model.hidden_size=abc"], r"option model\.hidden_size: Value 'abc' .* could not be converted to Integer"),
        (["model.hidden_size=15"], r"model\.hidden_size=15 must be even for a bidirectional encoder"),
        (["model.context=sometimes"], r"model\.context='sometimes': choose one of init, every_step"),
        (["model.decoder.num_layers=2"], r"model\.decoder\.num_layers=2 must equal model\.encoder\.num_layers=1"),
        (["model.encoder.dropout=1.0"], r"model\.encoder\.dropout=1\.0: must lie in \[0, 1\)"),
        (["decoding=beam", "decoding.beam_size=0"], r"decoding\.beam_size=0: must be at least 1"),
        (["decoding.name=sampling"], r"decoding='sampling': choose one of greedy, beam"),
        (["optim.scheduler=cosine"], r"optim\.scheduler='cosine': choose one of plateau, none"),
        (["optim.lr=0"], r"optim\.lr=0\.0: must be a positive number"),
        (["eval.length_buckets=[1,20,10]"], r"eval\.length_buckets=\[1, 20, 10\]: need increasing lower edges"),
        (["eval.bootstrap=1"], r"eval\.bootstrap=1: give the number of bootstrap resamples .* or 0 for no intervals"),
        (["logger=wandb", "logger.mode=sometimes"], r"logger\.mode='sometimes': choose one of offline, online"),
        (["data.task=shuffle"], r"data\.task='shuffle': choose one of copy, reverse, sort, toy_translation"),
        (["data.tokenizer.model_type=wordpiece"], r"data\.tokenizer\.model_type='wordpiece'"),
        (["+data.preprocess.normalize=NFX"], r"data\.preprocess\.normalize='NFX'"),
        (["trainer.precision=bf16-mixed", "trainer.accelerator=cpu"], r"trainer\.precision=bf16-mixed needs a GPU"),
        (["model.hidden_size=0"], r"model\.hidden_size=0: must be at least 1"),
        (["model.hidden_size=-4"], r"model\.hidden_size=-4: must be at least 1"),
        (["model.encoder.bidirectional=false", "model.encoder.num_layers=0"], r"model\.encoder\.num_layers=0: must be at least 1"),
        (["seed=abc"], r"option seed: Value 'abc' .* could not be converted to Integer"),
        (["data.batch.max_tokens=0"], r"data\.batch\.max_tokens=0: must be at least 1"),
        (["+model.hiden_size=64"], r"option model\.hiden_size: Key 'hiden_size' not in 'ModelConfig'"),
        (["+trainer.max_step=5"], r"option trainer\.max_step: not an argument of Lightning's Trainer; did you mean trainer\.max_steps\?"),
        (["+optim.lr_decay=0.5"], r"option optim\.lr_decay: Key 'lr_decay' not in 'OptimConfig'"),
    ],
)  # fmt: skip
def test_bad_values_name_the_option(tiny_cfg, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_train(tiny_cfg(*overrides))


def test_refused_before_anything_is_read_or_written(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="teacher_forcing.ratio"):
        train(tiny_cfg("teacher_forcing=constant", "teacher_forcing.ratio=2"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def _compose(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            name, overrides=["output_dir=x", *overrides] if name == "evaluate" else list(overrides)
        )


def test_evaluate_and_translate_options():
    validate_evaluate(_compose("evaluate", "run_dir=r"))
    with pytest.raises(ConfigError, match="give exactly one of run_dir"):
        validate_evaluate(_compose("evaluate", "run_dir=r", "ckpt_path=c"))
    with pytest.raises(ConfigError, match="split='train': choose one of test, val"):
        validate_evaluate(_compose("evaluate", "run_dir=r", "split=train"))
    with pytest.raises(ConfigError, match="bootstrap=-5: give the number of bootstrap resamples"):
        validate_evaluate(_compose("evaluate", "run_dir=r", "bootstrap=-5"))
    with pytest.raises(ConfigError, match=r"decoding\.beam_size=0"):
        validate_evaluate(_compose("evaluate", "run_dir=r", "decoding=beam", "decoding.beam_size=0"))
    validate_translate(_compose("translate", "ckpt_path=c"))
    with pytest.raises(ConfigError, match="ckpt_path=<checkpoint file or run directory> is required"):
        validate_translate(_compose("translate"))
    with pytest.raises(ConfigError, match="long_lines='ignore': choose one of error, warn"):
        validate_translate(_compose("translate", "ckpt_path=c", "long_lines=ignore"))
