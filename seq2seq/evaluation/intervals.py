"""95 % confidence intervals: sacrebleu's bootstrap for corpus scores, Wilson's for token accuracies, Student's t
for a mean over independent runs.

A corpus score (BLEU, chrF) is recomputed on ``n`` resamples of the sentences, drawn with replacement by
sacrebleu's own ``_bootstrap_resample`` (Koehn 2004; the machinery behind ``corpus_score(n_bootstrap=n)``,
seeded by ``SACREBLEU_SEED``, 12345 unless set). The interval is that of sacrebleu's ``estimate_ci``: the
resampled scores sorted, from the ``⌊n/40⌋``-th to the ``(n-1-⌊n/40⌋)``-th. sacrebleu prints it as
``μ ± half-width``; ``results.json`` keeps its two ends ``[low, high]``.

A token accuracy is a proportion of independent-enough trials; its interval is Wilson's score interval
(Wilson 1927), which stays inside [0, 100] and is sensible for 0 or all correct.

A mean over ``n`` independent runs (seeds, repeated benchmarks) gets Student's t interval (Student 1908):
``mean ± t(0.975, n-1) · sd / √n``, sd the sample standard deviation. It assumes roughly normal values; with
3–5 runs it is wide, as it should be.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from sacrebleu.metrics.base import Metric
from sacrebleu.significance import _bootstrap_resample

Z95 = 1.959963984540054  # the two-sided 95 % quantile of the standard normal


def bootstrap_interval(
    metric: Metric, hypotheses: Sequence[str], references: Sequence[str], n: int
) -> list[float] | None:
    """``[low, high]`` of ``metric`` over ``n`` bootstrap resamples of the sentences; None when ``n`` < 2.

    ``metric`` afterwards carries ``n_bootstrap`` and ``seed``, so its ``get_signature()`` says ``bs:n`` and
    ``seed:…`` exactly as after ``metric.corpus_score(..., n_bootstrap=n)``.
    """
    if n < 2 or not hypotheses:
        return None
    return resampled_interval(
        metric, metric._extract_corpus_statistics(list(hypotheses), [list(references)]), n
    )


def resampled_interval(metric: Metric, rows: Sequence[Sequence[float]], n: int) -> list[float] | None:
    """:func:`bootstrap_interval` from sacrebleu's per-sentence statistics ``rows`` (one per sentence, as its
    ``_extract_corpus_statistics`` returns them), already extracted; None when ``n`` < 2 or no rows."""
    if n < 2 or not rows:
        return None
    seed, scores = _bootstrap_resample(list(rows), metric, n)
    metric.n_bootstrap, metric.seed = n, seed
    ordered = sorted(score.score for score in scores)
    lower = n // 40
    return [float(ordered[lower]), float(ordered[n - lower - 1])]


def wilson_interval(successes: int, trials: int, z: float = Z95) -> list[float] | None:
    """Wilson's score interval of the proportion ``successes / trials``, in percent; None for no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends where rounding would miss them
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return [100.0 * low, 100.0 * high]


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> list[float] | None:
    """Student's t interval ``[low, high]`` of the mean of independent ``values``; None for fewer than two."""
    from scipy.stats import t as student_t  # only here: scipy.stats takes half a second to import

    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values, mean) / math.sqrt(n)
    return [mean - half, mean + half]
