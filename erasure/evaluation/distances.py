"""Distribution distances between two sets of image features: FID and KID, with bootstrap intervals.

Feature extraction is pluggable and happens elsewhere: these functions take (n, d) feature arrays
(Inception pool3, CLIP image embeddings, ...) and record the extractor's name you pass in
``settings``, because FIDs from different extractors or resize pipelines are not comparable.

- FID (Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})``. The trace of
  the matrix square root is computed as the sum of square roots of the eigenvalues of the symmetric
  PSD matrix ``S_a^{1/2} S_b S_a^{1/2}`` (same spectrum as ``S_a S_b``), with round-off negatives
  clipped: no complex parts to discard and no failure on singular covariances (n < d), unlike a
  general ``sqrtm``. Covariances use ddof=1, as pytorch-fid and clean-fid do.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel ``k(x, y) = (gamma x.y + coef0)^degree``
  (default ``(x.y/d + 1)^3``), averaged over ``num_subsets`` random subsets of ``subset_size`` items
  from each set, as torchmetrics' ``KernelInceptionDistance`` defaults (100 subsets of min(1000, n)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from erasure.errors import ErasureError
from erasure.evaluation.bootstrap import MetricResult, as_array, bootstrap_ci, bootstrap_settings

# Rows of a kernel matrix computed at once: bounds memory to block x n entries for any n.
_KERNEL_BLOCK_ROWS = 1024


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b) (clipped at 0 against round-off)."""
    mu_a, mu_b = as_array(mu_a), as_array(mu_b)
    sigma_a, sigma_b = _symmetric(as_array(sigma_a)), _symmetric(as_array(sigma_b))
    root_a = _psd_sqrt(sigma_a)
    middle = _symmetric(root_a @ sigma_b @ root_a)
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff) + float(np.trace(sigma_a) + np.trace(sigma_b)) - 2.0 * trace_sqrt
    return max(value, 0.0)


def fid(
    features_a: Any,
    features_b: Any,
    *,
    feature_extractor: str | None = None,
    n_resamples: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricResult:
    """FID between two (n, d) feature sets, with a bias-centred bootstrap interval.

    Each resample recomputes both covariances and the matrix square root (seconds at d = 2048), hence
    100 resamples by default; ``n_resamples=0`` skips the interval. FID is biased upwards at finite n
    and the bias shrinks with n, so compare FIDs computed on equally many images. ``details`` splits
    the value into its mean and covariance terms.
    """
    a, b = _features(features_a, features_b, "fid")
    value = _fid(a, b)
    low, high = bootstrap_ci((a, b), _fid, n_resamples=n_resamples, seed=seed, confidence=confidence,
                             bias_centred=True)
    diff = a.mean(0) - b.mean(0)
    settings = {
        "formula": "|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), covariances with ddof=1",
        "matrix_sqrt": "eigh of S_a^(1/2) S_b S_a^(1/2), negative eigenvalues clipped",
        "feature_extractor": feature_extractor, "n_a": len(a), "n_b": len(b), "dims": a.shape[1],
        **bootstrap_settings(n_resamples, seed, confidence),
        "ci": "percentile bootstrap over the items of each set, shifted by the bootstrap bias, clipped at 0",
    }
    mean_term = float(diff @ diff)
    return MetricResult(
        name="fid", value=value, ci_low=max(low, 0.0), ci_high=max(high, 0.0), n=min(len(a), len(b)),
        settings=settings, details={"mean_term": mean_term, "covariance_term": value - mean_term},
    )


def kid(
    features_a: Any,
    features_b: Any,
    *,
    feature_extractor: str | None = None,
    subset_size: int = 1000,
    num_subsets: int = 100,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricResult:
    """KID between two (n, d) feature sets: the unbiased MMD^2 averaged over random subsets.

    ``value`` is the mean over ``num_subsets`` subsets of ``min(subset_size, n_a, n_b)`` items drawn
    without replacement from each set (torchmetrics' estimate; with subsets as large as the sets it is
    the full-sample unbiased MMD^2). ``details["subset_std"]`` is torchmetrics' ``kid_std``. The
    interval is a percentile bootstrap of the full-sample unbiased MMD^2 over the items of each set;
    pairs of one item with its own copy are left out of the within-set sums, which keeps the
    resampled statistic unbiased (including them would add ``k(x, x)`` terms and push KID upwards).
    """
    a, b = _features(features_a, features_b, "kid")
    if subset_size < 2 or num_subsets < 1:
        raise ErasureError(f"kid: subset_size must be >= 2 and num_subsets >= 1, got {subset_size} and {num_subsets}")
    m = min(subset_size, len(a), len(b))
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    subsets_a, subsets_b = (_subset_weights(len(x), m, num_subsets, rng) for x in (a, b))
    resamples_a, resamples_b = (_resample_weights(len(x), n_resamples, rng) for x in (a, b))
    mmd2 = _weighted_mmd2(a, b, np.hstack([subsets_a, resamples_a]), np.hstack([subsets_b, resamples_b]),
                          lambda gram: (gamma * gram + coef0) ** degree)
    per_subset, resampled = mmd2[:num_subsets], mmd2[num_subsets:]
    if n_resamples:
        tail = (1.0 - confidence) / 2.0
        finite = resampled[np.isfinite(resampled)]  # resamples of one distinct item hold no pair: left out
        low, high = ((float(q) for q in np.quantile(finite, [tail, 1.0 - tail])) if len(finite)
                     else (float("nan"), float("nan")))
    else:
        low = high = float("nan")
    settings = {
        "kernel": f"({gamma:.6g} x.y + {coef0:g})^{degree}", "subset_size": m, "num_subsets": num_subsets,
        "feature_extractor": feature_extractor, "n_a": len(a), "n_b": len(b), "dims": a.shape[1],
        **bootstrap_settings(n_resamples, seed, confidence),
        "ci": "percentile bootstrap of the full-sample unbiased MMD^2 over the items of each set",
    }
    details = {"subset_std": float(per_subset.std(ddof=1)) if num_subsets > 1 else 0.0}
    return MetricResult(name="kid", value=float(per_subset.mean()), ci_low=low, ci_high=high,
                        n=min(len(a), len(b)), settings=settings, details=details)


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _weighted_mmd2(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray, weights_b: np.ndarray, kernel) -> np.ndarray:
    """Unbiased MMD^2 for each column of item weights (0/1 for subsets, counts for bootstrap resamples).

    With weights w: within = (w'Kw - sum_i w_i^2 K_ii) / ((sum w)^2 - sum w^2), which leaves out every
    pair of an item with itself; cross = w_a' K_ab w_b / (sum w_a sum w_b). All columns share one pass
    over each kernel matrix, computed in row blocks, so memory stays O(block x n).
    """
    within_a = _within(a, weights_a, kernel)
    within_b = _within(b, weights_b, kernel)
    cross = np.zeros(weights_a.shape[1])
    for start in range(0, len(a), _KERNEL_BLOCK_ROWS):
        rows = slice(start, start + _KERNEL_BLOCK_ROWS)
        cross += np.einsum("ik,ik->k", kernel(a[rows] @ b.T) @ weights_b, weights_a[rows])
    cross /= weights_a.sum(0) * weights_b.sum(0)
    return within_a + within_b - 2.0 * cross


def _within(x: np.ndarray, weights: np.ndarray, kernel) -> np.ndarray:
    quadratic = np.zeros(weights.shape[1])
    for start in range(0, len(x), _KERNEL_BLOCK_ROWS):
        rows = slice(start, start + _KERNEL_BLOCK_ROWS)
        quadratic += np.einsum("ik,ik->k", kernel(x[rows] @ x.T) @ weights, weights[rows])
    self_similarity = kernel(np.einsum("ij,ij->i", x, x))
    squared = weights**2
    total = weights.sum(0)
    pairs = total**2 - squared.sum(0)  # 0 for a resample that drew one item only: no pair, no estimate (NaN)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, (quadratic - self_similarity @ squared) / np.where(pairs > 0, pairs, 1.0), np.nan)


def _subset_weights(n: int, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.zeros((n, count))
    for column in range(count):
        weights[rng.permutation(n)[:size], column] = 1.0
    return weights


def _resample_weights(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n items is drawn in each of ``count`` bootstrap resamples, as (n, count)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=count).T.astype(np.float64)


def _features(features_a: Any, features_b: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_array(features_a), as_array(features_b)
    if a.ndim != 2 or b.ndim != 2:
        raise ErasureError(f"{metric}: features must be (n, d) arrays, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ErasureError(f"{metric}: feature sets differ in width ({a.shape[1]} vs {b.shape[1]}); "
                           "extract both with the same feature extractor")
    if len(a) < 2 or len(b) < 2:
        raise ErasureError(f"{metric}: needs at least 2 items per set, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ErasureError(f"{metric}: features contain NaN or inf; check the feature extractor's input")
    return a, b


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2.0


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool features (2048-d), from a local weights file: the FID features of the
    literature (``pt_inception-2015-12-05-6726825d.pth``, the TF-FID Inception ported by pytorch-fid).

    The architecture and the forward pass (bilinear resize to 299, scale to [-1, 1]) are pytorch-fid's own
    (``pip install pytorch-fid``, in the ``dev`` extra); only the weights come from ``weights`` instead of its
    download: a ``.safetensors`` file, or the published ``.pth`` with ``allow_pickle=True`` (loaded with
    ``torch.load(weights_only=True)``). Call it on uint8 ``(N, H, W, 3)`` images.
    """

    def __init__(self, weights: str | None, *, allow_pickle: bool = False, device: str = "cpu",
                 batch_size: int = 32) -> None:
        from pathlib import Path

        import torch

        try:
            import pytorch_fid.inception as fid_inception
        except ImportError:
            raise ErasureError("Inception FID features need pytorch-fid: pip install pytorch-fid "
                               "(or use --features with a CLIP)") from None
        if weights is None or not Path(weights).is_file():
            missing = "" if weights is None else f" (not found: {weights})"
            raise ErasureError(f"Inception FID features need pytorch-fid's weights file{missing}: download "
                               f"{fid_inception.FID_WEIGHTS_URL.rsplit('/', 1)[-1]} from its release page and pass "
                               "it with --features-weights PATH (a .pth needs --allow-pickle)")
        path = Path(weights)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif allow_pickle:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise ErasureError(f"{path} is a pickle file; convert it to .safetensors or pass --allow-pickle")
        original = fid_inception.load_state_dict_from_url
        # pytorch-fid builds its FID Inception and then downloads the weights; hand it ours instead
        fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except RuntimeError as error:
            raise ErasureError(f"{path} does not fit pytorch-fid's Inception ({str(error).splitlines()[0]})") from None
        finally:
            fid_inception.load_state_dict_from_url = original
        self.model = model.eval().requires_grad_(False).to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        self.name = f"pytorch-fid InceptionV3 pool3 ({path.name})"

    def __call__(self, images: Any) -> np.ndarray:
        import torch

        array = np.asarray(images)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ErasureError(f"Inception features take (N, H, W, 3) images, got shape {array.shape}")
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        out = []
        with torch.no_grad():
            for start in range(0, len(array), self.batch_size):
                x = torch.from_numpy(array[start : start + self.batch_size]).permute(0, 3, 1, 2).float() / 255.0
                out.append(self.model(x.to(self.device))[0].flatten(1).cpu())
        return torch.cat(out).numpy().astype(np.float64)


def load_features(spec: str, weights: str | None = None, *, allow_pickle: bool = False):
    """(images -> (n, d) features, their name) for FID/KID from a ``--features`` spec: ``inception``
    (:class:`InceptionFeatures` from ``weights``) or a CLIP backend spec (``open_clip:NAME`` with ``weights``,
    ``transformers:FOLDER``, ``world``: its image embeddings)."""
    if spec == "inception":
        extractor = InceptionFeatures(weights, allow_pickle=allow_pickle)
        return extractor, extractor.name
    from erasure.evaluation.clip_backends import load_clip_backend

    return load_clip_backend(spec, weights).embed_images, f"{spec} image embeddings"
