"""One look per model variant, the same in every figure: colour = attention, line style = encoder.

The dashboard, the run plots, the README figures and the W&B report all ask :func:`variant_style`, so
``gru + bahdanau`` is the same blue solid line everywhere. The colours are Okabe & Ito's colour-blind-safe
palette (2008), one per attention variant; the encoders differ by dash pattern and marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Okabe–Ito; "none" (the fixed-context baseline) is black, every attention variant its own hue
ATTENTION_COLOURS = {
    "none": "#000000",
    "bahdanau": "#0072B2",
    "luong_dot": "#E69F00",
    "luong_general": "#009E73",
    "luong_concat": "#CC79A7",
    "luong_local": "#D55E00",
    "multihead": "#56B4E9",
}
EXTRA_COLOURS = ("#F0E442", "#999999", "#882255", "#44AA99", "#117733", "#332288")  # unknown variants
ENCODER_LINES = {
    "rnn": (":", "^"),
    "gru": ("-", "o"),
    "lstm": ("--", "s"),
    "transformer": ("-.", "D"),
}
EXTRA_LINES = ((0, (5, 1, 1, 1)), (0, (1, 3))), ("v", "P", "X")


def attention_colour(attention: str | None) -> str:
    """The colour of an attention variant (a stable pick from spare colours for one not listed)."""
    if attention in ATTENTION_COLOURS:
        return ATTENTION_COLOURS[attention]
    return EXTRA_COLOURS[sum(map(ord, str(attention))) % len(EXTRA_COLOURS)]


def variant_style(choices: Mapping[str, str]) -> dict[str, Any]:
    """matplotlib ``plot`` keywords (``color``, ``linestyle``, ``marker``) for a run's ``choices``
    (``results.json``'s ``model/encoder`` and ``model/attention``)."""
    encoder = choices.get("model/encoder")
    if encoder in ENCODER_LINES:
        linestyle, marker = ENCODER_LINES[encoder]
    else:
        index = sum(map(ord, str(encoder)))
        linestyle, marker = EXTRA_LINES[0][index % 2], EXTRA_LINES[1][index % 3]
    return {
        "color": attention_colour(choices.get("model/attention")),
        "linestyle": linestyle,
        "marker": marker,
    }
