"""Dense CRF with Potts compatibilities: one interface, two backends.

- ``"pydensecrf"``: pydensecrf2, one ``DenseCRF2D`` call per problem (the references' loop).
- ``"batched"``: a torch permutohedral lattice built once per image; all problems' label channels are
  filtered together and each problem gets its own softmax. Same algorithm and numbers as pydensecrf up to
  float rounding; runs on CPU or CUDA.
- ``"auto"``: ``"batched"``.

Example::

    q = dense_crf(image, probs, URN_CRF)                  # (K, H, W) marginals
    qs = dense_crf_many(image, [p1, p2, p3], URN_CRF)     # three problems, one lattice

Importing the package imports only the parameters (:mod:`urn.crf.params`): :mod:`urn.config` holds
``CRFParams`` sections, and the CLI loads configs without importing torch. The solver's names are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from urn.crf.params import PMM_CRF, PMM_STAGE2_CRF, URN_CRF, CRFParams

if TYPE_CHECKING:
    from urn.crf.solver import BACKENDS, MAX_CHANNELS, CRFSolver, dense_crf, dense_crf_many, resolve_backend

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


def __getattr__(name: str) -> Any:
    if name in __all__:  # a solver name (the parameters are bound above)
        return getattr(importlib.import_module("urn.crf.solver"), name)
    raise AttributeError(f"module 'urn.crf' has no attribute {name!r}")
