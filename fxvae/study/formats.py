"""How the report writes its numbers: a mean ± sd over the seeds, in decimals (nats) or significant digits (the
data's units), and the words around them. Shared by the verdicts (:mod:`fxvae.study.verdict`,
:mod:`fxvae.study.ae_vs_vae`) and the report (:mod:`fxvae.study.report`).

>>> mean_sd([24.0, 26.0]), mean_sd_sig([0.0123]), times(2.0)
('25.00 ± 1.41', '0.0123', 'twice')
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """The finite ``values`` as their mean ± sd in ``digits`` decimals (one value alone; "-" for none).

    >>> mean_sd([1.0, float("nan")]), mean_sd([])
    ('1.00', '-')
    """
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def sig(value: float, digits: int = 3) -> str:
    """A value in the data's units, whose scale is the data's: significant digits, not decimals.

    >>> sig(0.000123456)
    '0.000123'
    """
    return f"{value:.{digits}g}"


def mean_sd_sig(values: Sequence[float], digits: int = 3) -> str:
    """:func:`mean_sd` in significant digits (:func:`sig`), the sd in two.

    >>> mean_sd_sig([0.0121, 0.0125])
    '0.0123 ± 0.00028'
    """
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return sig(values[0], digits)
    return f"{sig(statistics.mean(values), digits)} ± {sig(statistics.stdev(values), 2)}"


def epoch_text(epoch: int | None, epochs: int) -> str:
    """An epoch a run got within reach at, or ``>epochs`` where it never did (None).

    >>> epoch_text(3, 20), epoch_text(None, 20)
    ('3', '>20')
    """
    return f">{epochs}" if epoch is None else str(epoch)


def times(factor: float) -> str:
    """``factor`` as a multiplier in a sentence: "twice", "3 times".

    >>> times(3.0)
    '3 times'
    """
    return {1.0: "once", 2.0: "twice"}.get(factor, f"{factor:g} times")
