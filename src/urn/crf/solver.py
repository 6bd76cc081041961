"""Backend selection, the per-image solver and :func:`dense_crf` / :func:`dense_crf_many` (see :mod:`urn.crf`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from urn.crf.params import URN_CRF, CRFParams
from urn.crf.reference import dense_crf_energy, import_pydensecrf, unary_energy

BACKENDS: tuple[str, ...] = ("auto", "pydensecrf", "batched")

#: Label channels filtered together per pass in the batched backend. The cost per channel is flat
#: from ~16 to ~200 channels (measured on 2 CPU cores); 64 bounds memory to two lattice-sized and a few
#: image-sized float32 buffers of this width (about 0.3 GB at 320x480).
MAX_CHANNELS = 64


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an (H, W, 3) uint8 image and return it C-contiguous.

    Raises:
        ValueError: wrong type, shape or dtype.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"CRF image must be an (H, W, 3) uint8 array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"CRF image must be uint8, got {image.dtype}")
    image = np.ascontiguousarray(image)
    # Decoded images are often read-only views; torch.from_numpy would warn about them.
    return image if image.flags.writeable else image.copy()


def check_probs(probs: np.ndarray, hw: tuple[int, int], what: str = "probabilities") -> np.ndarray:
    """Validate (K, H, W) probabilities for an H x W image and return them as float32.

    Raises:
        ValueError: wrong shape, no labels, or NaN/inf values.
    """
    arr = np.asarray(probs)
    if arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(hw):
        raise ValueError(f"CRF {what} must be (K, {hw[0]}, {hw[1]}) to match the image, got {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"CRF {what} need at least one label")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"CRF {what} must be a float array, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"CRF {what} contain NaN or inf values")
    return arr


def resolve_backend(backend: str) -> str:
    """The concrete backend for ``backend``: "auto" is "batched".

    Raises:
        ValueError: unknown backend name.
        UrnError: "pydensecrf" asked for and pydensecrf2 is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown CRF backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        return "batched"
    if backend == "pydensecrf":
        import_pydensecrf()
    return backend


class CRFSolver:
    """Dense CRFs over one image: build once, then :meth:`run` any number of problem batches.

    With the batched backend the two lattices (and the filter matrices) are built here, once, and
    every :meth:`run` reuses them. The pydensecrf backend has nothing to share: each problem is one
    ``DenseCRF2D`` call that rebuilds its lattices, as in the reference.

    Args:
        image: (H, W, 3) uint8 RGB.
        params: CRF parameters.
        backend: "auto", "pydensecrf" or "batched".
        device: torch device for the batched backend (default CPU).
        complement: batched backend: derive each problem's last-label message from the others
            (exact algebra, saves 1/K of the work).
        max_channels: batched backend: label channels filtered together per pass.

    The batched backend uses torch's intra-op threads (all cores by default). Where other processes
    keep the cores busy (DataLoader or multiprocessing workers), give it one thread
    (``torch.set_num_threads(1)``): OpenMP threads waiting on descheduled peers made two threads on two
    busy cores several times slower than one.
    """

    def __init__(
        self,
        image: np.ndarray,
        params: CRFParams,
        *,
        backend: str = "auto",
        device: str | torch.device | None = None,
        complement: bool = True,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.image = check_image(image)
        self.params = params
        self.backend = resolve_backend(backend)
        self.height, self.width = self.image.shape[:2]
        self.device = torch.device(device if device is not None else "cpu")
        self.complement = complement
        self.max_channels = max(1, int(max_channels))
        self._op = None
        if self.backend == "batched":
            from urn.crf.batched import build_operator

            self._op = build_operator(torch.from_numpy(self.image).to(self.device), params)

    def run(self, problems: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Solve independent CRF problems over this image.

        Args:
            problems: (K_i, H, W) float probability maps (float16/32/64); K_i may differ.

        Returns:
            One (K_i, H, W) float32 marginal array per problem, in order.
        """
        hw = (self.height, self.width)
        checked = [check_probs(p, hw, what=f"problem {i}") for i, p in enumerate(problems)]
        return self.run_energies([unary_energy(p, self.params.prob_floor) for p in checked])

    def run_energies(self, unaries: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Like :meth:`run`, from unary energies ``-log(clip(P, floor, 1))`` computed by the caller.

        Lets a caller that solves many problems sharing most of their rows (response scaling) take
        each logarithm once; the values are the ones :meth:`run` would compute.

        Args:
            unaries: (K_i, H*W) or (K_i, H, W) float32 energies; ``params.prob_floor`` is not applied
                again.

        Returns:
            One (K_i, H, W) float32 marginal array per problem, in order.
        """
        n = self.height * self.width
        flat = []
        for i, u in enumerate(unaries):
            u = np.asarray(u, dtype=np.float32).reshape(u.shape[0], -1)
            if u.shape[1] != n:
                raise ValueError(f"CRF energies of problem {i} must cover {n} pixels, got {u.shape[1]}")
            flat.append(u)
        if self.backend == "pydensecrf":
            return [dense_crf_energy(self.image, u, self.params) for u in flat]
        return self._run_batched(flat)

    def _run_batched(self, unaries: list[np.ndarray]) -> list[np.ndarray]:
        from urn.crf.batched import mean_field

        results: list[np.ndarray | None] = [None] * len(unaries)
        by_k: dict[int, list[int]] = {}
        for i, u in enumerate(unaries):
            by_k.setdefault(u.shape[0], []).append(i)
        for k, idx in by_k.items():
            per_pass = max(1, self.max_channels // max(1, k - 1 if self.complement else k))
            for start in range(0, len(idx), per_pass):
                chunk = idx[start : start + per_pass]
                u = torch.from_numpy(np.stack([unaries[i] for i in chunk])).to(self.device)  # (G, K, N)
                q = mean_field(self._op, u, self.params.iters, complement=self.complement)
                q_np = q.cpu().numpy()  # (K, G, N)
                for j, i in enumerate(chunk):
                    results[i] = np.ascontiguousarray(q_np[:, j]).reshape(k, self.height, self.width)
        return results  # type: ignore[return-value]  # every index was filled above


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
