import math

import pytest
from omegaconf import OmegaConf

from seq2seq.training.teacher_forcing import teacher_forcing_ratio


def cfg(**kw):
    return OmegaConf.create(kw)


def test_always_and_constant():
    assert teacher_forcing_ratio(cfg(schedule="always"), 10_000) == 1.0
    assert teacher_forcing_ratio(cfg(schedule="constant", ratio=0.25), 0) == 0.25


def test_linear():
    c = cfg(schedule="linear", k=1.0, c=0.01, min_ratio=0.2)
    assert teacher_forcing_ratio(c, 0) == 1.0
    assert teacher_forcing_ratio(c, 50) == pytest.approx(0.5)
    assert teacher_forcing_ratio(c, 1000) == 0.2


def test_exponential():
    c = cfg(schedule="exponential", k=0.99)
    assert teacher_forcing_ratio(c, 0) == 1.0
    assert teacher_forcing_ratio(c, 100) == pytest.approx(0.99**100)


def test_inverse_sigmoid():
    c = cfg(schedule="inverse_sigmoid", k=10.0)
    assert teacher_forcing_ratio(c, 0) == pytest.approx(10 / 11)
    assert teacher_forcing_ratio(c, 10) == pytest.approx(10 / (10 + math.e))
    assert teacher_forcing_ratio(c, 10**9) == 0.0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule='cosine'"):
        teacher_forcing_ratio(cfg(schedule="cosine"), 0)
