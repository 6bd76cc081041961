"""Dense CRF with Potts compatibilities: one interface, two backends.

- ``"pydensecrf"``: pydensecrf2, one ``DenseCRF2D`` call per problem (the references' loop).
- ``"batched"``: a torch permutohedral lattice built once per image; all problems' label channels are
  filtered together and each problem gets its own softmax. Same algorithm and numbers as pydensecrf up to
  float rounding; runs on CPU or CUDA.
- ``"auto"``: ``"batched"``.

Example::

    q = dense_crf(image, probs, URN_CRF)                  # (K, H, W) marginals
    qs = dense_crf_many(image, [p1, p2, p3], URN_CRF)     # three problems, one lattice
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from urn.crf.params import PMM_CRF, PMM_STAGE2_CRF, URN_CRF, CRFParams
from urn.crf.solver import BACKENDS, MAX_CHANNELS, CRFSolver, resolve_backend

__all__ = [
    "BACKENDS",
    "CRFParams",
    "CRFSolver",
    "MAX_CHANNELS",
    "PMM_CRF",
    "PMM_STAGE2_CRF",
    "URN_CRF",
    "dense_crf",
    "dense_crf_many",
    "resolve_backend",
]


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    params: CRFParams = URN_CRF,
    *,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Mean-field marginals of a fully connected CRF (pydensecrf semantics).

    Unary ``-log(clip(P, floor, 1))``; Potts pairwise terms ``addPairwiseGaussian(sxy, compat)`` and
    ``addPairwiseBilateral(sxy, srgb, image, compat)``; ``inference(iters)``.

    Args:
        image: (H, W, 3) uint8 RGB image.
        probs: (K, H, W) float probabilities (float16/32/64).
        params: CRF parameters (default: URN's).
        backend: "auto", "pydensecrf" or "batched".
        device: torch device for the batched backend (default CPU).

    Returns:
        (K, H, W) float32 marginals.

    Raises:
        ValueError: bad shapes, dtypes or non-finite probabilities.
        UrnError: the pydensecrf backend was asked for and pydensecrf2 is missing.
    """
    return dense_crf_many(image, [probs], params, backend=backend, device=device)[0]


def dense_crf_many(
    image: np.ndarray,
    problems: Sequence[np.ndarray],
    params: CRFParams = URN_CRF,
    *,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> list[np.ndarray]:
    """Many independent CRF problems over the same image.

    With the batched backend the image's lattices are built once and all problems run together.

    Args:
        image: (H, W, 3) uint8 RGB image.
        problems: (K_i, H, W) float probability maps; K_i may differ between problems.
        params: CRF parameters (default: URN's).
        backend: "auto", "pydensecrf" or "batched".
        device: torch device for the batched backend (default CPU).

    Returns:
        One (K_i, H, W) float32 marginal array per problem, in order.
    """
    if len(problems) == 0:
        return []
    return CRFSolver(image, params, backend=backend, device=device).run(problems)
