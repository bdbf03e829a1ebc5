"""Metric results with confidence intervals, and the one bootstrap every metric uses.

A :class:`MetricResult` is a value, its 95% bootstrap interval, the number of items behind it and the
settings needed to reproduce it (threshold, backend, resamples, seed...). The bootstrap resamples
*items* (images, image pairs, feature rows), so the same function serves means of per-image scores and
set-level statistics such as FID or KID, which it recomputes on every resample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from erasure.errors import ErasureError

# Means are resampled in blocks of at most this many indices, so memory stays flat for large n.
_MAX_INDICES_PER_BLOCK = 4_000_000


@dataclass(frozen=True)
class MetricResult:
    """One number a metric reports, with its bootstrap interval.

    ``ci_low``/``ci_high`` bound the ``confidence`` interval stored in ``settings`` (NaN when the
    bootstrap was switched off with ``n_resamples=0``); ``n`` counts the items behind the value
    (images, pairs, or for two-sample statistics the smaller sample). ``settings`` holds what is needed
    to reproduce the number; ``details`` holds diagnostics that are not the headline (e.g. KID's
    standard deviation over subsets). Treat both dicts as read-only.
    """

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    details: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A plain (JSON-ready) copy."""
        return asdict(self)

    def __str__(self) -> str:
        interval = "" if math.isnan(self.ci_low) else f" [{self.ci_low:.4g}, {self.ci_high:.4g}]"
        return f"{self.name} = {self.value:.4g}{interval} (n={self.n})"


def bootstrap_settings(n_resamples: int, seed: int, confidence: float) -> dict[str, Any]:
    """The bootstrap's part of a result's ``settings``."""
    return {"ci": "percentile bootstrap over items", "confidence": confidence, "n_resamples": n_resamples, "seed": seed}


def bootstrap_ci(
    data: Any,
    statistic: Callable[..., float] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    bias_centred: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the items of ``data``.

    ``data`` is one array (items along axis 0) or a tuple of arrays, i.e. independent samples (e.g. the
    two feature sets of FID); each is resampled with replacement on its own and passed to
    ``statistic(*resampled)``. Without ``statistic``, ``data`` is a 1-D array of per-item scores and
    the statistic is their mean (vectorised). The draws come from ``numpy.random.default_rng(seed)``,
    so the interval is reproducible. ``n_resamples=0`` gives ``(nan, nan)``.

    ``bias_centred`` shifts the bootstrap distribution by its bias (its mean minus the statistic on
    ``data``) before taking percentiles. Use it for biased set statistics such as FID: resampling with
    replacement adds the estimator's finite-sample bias a second time, so the plain percentile interval
    of FID sits entirely above the estimate.
    """
    if not 0.0 < confidence < 1.0:
        raise ErasureError(f"confidence {confidence} is not between 0 and 1; use e.g. 0.95")
    if n_resamples < 0:
        raise ErasureError(f"n_resamples {n_resamples} is negative; use 0 (no interval) or more, e.g. 1000")
    samples = tuple(_items(x) for x in data) if isinstance(data, tuple) else (_items(data),)
    for sample in samples:
        if len(sample) == 0:
            raise ErasureError("cannot bootstrap an empty sample; pass at least one item")
    if n_resamples == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if statistic is None:
        if len(samples) != 1 or samples[0].ndim != 1:
            raise ErasureError("without a statistic, bootstrap_ci takes one 1-D array of per-item scores")
        estimates = _resampled_means(samples[0].astype(np.float64), n_resamples, rng)
        point = float(samples[0].mean()) if bias_centred else 0.0
    else:
        estimates = np.array([
            statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)) for _ in range(n_resamples)
        ], dtype=np.float64)
        point = float(statistic(*samples)) if bias_centred else 0.0
    if bias_centred:
        estimates = estimates - (estimates.mean() - point)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_result(
    name: str,
    scores: Sequence[float] | np.ndarray,
    *,
    settings: dict[str, Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    details: dict[str, Any] | None = None,
) -> MetricResult:
    """The mean of per-item ``scores`` as a MetricResult, with its bootstrap interval."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ErasureError(f"{name}: needs a non-empty 1-D array of per-item scores, got shape {values.shape}")
    low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return MetricResult(
        name=name, value=float(values.mean()), ci_low=low, ci_high=high, n=len(values),
        settings={**(settings or {}), **bootstrap_settings(n_resamples, seed, confidence)},
        details=dict(details or {}),
    )


def as_array(x: Any, *, dtype: Any = np.float64) -> np.ndarray:
    """A numpy array from an array-like or a torch tensor (detached and moved to the CPU first)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _items(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.ndim == 0:
        raise ErasureError("bootstrap data must have items along its first axis, got a scalar")
    return array


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    block = max(1, _MAX_INDICES_PER_BLOCK // n)
    means = []
    for start in range(0, n_resamples, block):
        indices = rng.integers(0, n, size=(min(block, n_resamples - start), n))
        means.append(values[indices].mean(axis=1))
    return np.concatenate(means)
