"""Batched dense-CRF mean field: many independent problems over one image share its lattices.

With Potts compatibilities the mean-field message of label l depends only on that label's own marginal:
``msg_l = sum_k w_k * norm_k * filter_k(norm_k * Q_l)``. Labels of different problems (and of the same
problem) therefore only meet in each problem's softmax. All problems' label channels are stacked into one
(N, C) matrix and filtered together in one pass per iteration, then each problem gets its own softmax.
The result is the same algorithm as pydensecrf's ``DenseCRF2D.inference`` (only the order of float
additions differs), not an approximation.

Each kernel's filter is linear, so it is stored as sparse matrices built once per image: a splat matrix
(vertices x pixels, barycentric weights times the symmetric normalisation), blur matrices (``[0.5, 1,
0.5]`` on the two lattice neighbours; for the 5-d bilateral lattice three directions are composed into
one matrix), and one slice matrix over both kernels (pixels x vertices, weights times ``alpha``, the
normalisation and the Potts weight). An iteration is a handful of sparse x dense products (MKL on CPU,
cuSPARSE on CUDA) over the wide channel matrix, into preallocated buffers, plus an elementwise softmax.

By default (``complement=True``) one label per problem is not filtered at all: a problem's marginals sum
to one, so the message of its last label is ``msg(1) - sum of the others``, with ``msg(1)`` computed
once per image. This is exact algebra (only rounding differs) and removes 1/K of the filtering work.

The position-only kernel depends on the image size alone and is cached (two sizes) across images.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from urn.crf.lattice import Lattice, bilateral_features, build_lattice, gaussian_features
from urn.crf.params import CRFParams


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix with int32 indices where they fit: MKL and cuSPARSE take int32, and int64 indices
    would be converted again on every product (measured: a quarter of the iteration time)."""
    if max(shape) < 2**31 and val.numel() < 2**31:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _spmm(out: torch.Tensor, mat: torch.Tensor, dense: torch.Tensor, accumulate: bool = False) -> None:
    """``out = mat @ dense`` (or ``out += ...``) into a preallocated buffer.

    ``torch.addmm(..., out=)`` reaches MKL's sparse BLAS on CPU; ``mat @ dense`` takes a much slower
    generic path and also allocates its result every call.
    """
    torch.addmm(out, mat, dense, beta=1.0 if accumulate else 0.0, out=out)


def _blur_matrix(lat: Lattice, dirs: Sequence[int]) -> torch.Tensor:
    """(M, M) CSR of the blurs along ``dirs`` applied in order, as one matrix.

    One direction is ``v + 0.5 * (v[n1] + v[n2])`` with missing neighbours dropped. Composing
    ``B_k ... B_1`` by index chains: row i of ``B_j @ A`` is ``A[i] + 0.5 * (A[n1_j(i)] + A[n2_j(i)])``;
    a chain through a missing vertex is dropped, exactly as the sequential blur loses what it would
    have stored there. The 3^k chains of a row reach distinct vertices (any d lattice directions are
    linearly independent, and k <= d), so nothing needs summing and the weights are exact powers of 2.
    """
    m = lat.num_vertices
    dev = lat.device
    cols = torch.arange(m, device=dev)[:, None]  # (M, E) column of each chain
    vals = torch.ones(1, device=dev)  # (E,) weight of each chain
    for j in dirs:
        # Row m is a sentinel "missing" row: its chains stay invalid.
        padded = torch.cat([cols, torch.full_like(cols[:1], m)])
        steps = (torch.arange(m, device=dev), lat.neighbors[j, 0], lat.neighbors[j, 1])
        cols = torch.cat([padded[t] for t in steps], 1)
        vals = torch.cat([vals, 0.5 * vals, 0.5 * vals])
    vals = vals.expand_as(cols)
    if dev.type != "cpu":
        # MKL takes unsorted column indices; cuSPARSE wants them sorted (missing = m sorts last).
        cols, order = torch.sort(cols, 1)
        vals = torch.gather(vals, 1, order)
    keep = cols < m
    crow = torch.cat([cols.new_zeros(1), torch.cumsum(keep.sum(1), 0)])
    flat = torch.nonzero(keep.reshape(-1)).squeeze(1)  # one compaction for both arrays
    return _csr(crow, cols.reshape(-1)[flat], vals.reshape(-1)[flat], (m, m))


def _blur_matrices(lat: Lattice, group: int) -> list[torch.Tensor]:
    """The d+1 directional blurs, ``group`` consecutive directions composed into each matrix.

    Composing fewer, denser passes trades more multiply-adds for fewer writes of the (M, C) grid:
    measured 40% faster for the 5-d bilateral lattice in groups of 3, no gain for the 2-d one.
    """
    d1 = lat.d + 1
    group = max(1, min(group, lat.d))  # at most d directions: their chains stay distinct
    return [_blur_matrix(lat, range(j, min(j + group, d1))) for j in range(0, d1, group)]


def _splat_matrix(lat: Lattice, scale: torch.Tensor) -> torch.Tensor:
    """(M, N) CSR of ``v[vertex_ir] += w_ir * scale_i * x_i``."""
    d1 = lat.d + 1
    counts = torch.bincount(lat.vertex.reshape(-1), minlength=lat.num_vertices)
    crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    pix = lat.order // d1
    vals = lat.weight.reshape(-1)[lat.order] * scale[pix]
    return _csr(crow, pix, vals, (lat.num_vertices, lat.num_points))


def _slice_matrix(lats: Sequence[Lattice], offsets: Sequence[int], scales: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, sum M) CSR of ``out_i = sum_k scale_ki * alpha_k * sum_r w_ir v_k[vertex_ir]``."""
    n = lats[0].num_points
    cols = torch.cat([lat.vertex + off for lat, off in zip(lats, offsets, strict=True)], 1)
    vals = torch.cat([lat.weight * (sc[:, None] * lat.alpha) for lat, sc in zip(lats, scales, strict=True)], 1)
    if cols.device.type != "cpu":
        cols, sort_idx = torch.sort(cols, 1)
        vals = torch.gather(vals, 1, sort_idx)
    per_row = cols.shape[1]
    crow = torch.arange(0, n * per_row + 1, per_row, device=cols.device)
    total = offsets[-1] + lats[-1].num_vertices
    return _csr(crow, cols.reshape(-1), vals.reshape(-1).contiguous(), (n, total))


@dataclass(frozen=True)
class LatticeKernel:
    """One Gaussian kernel, ready to filter: its lattice, blur matrices, normaliser and splat matrix.

    Attributes:
        lattice: the permutohedral lattice of the kernel's features.
        blurs: (M, M) CSR blur matrices, applied in order (each one or several lattice directions).
        norm: (N,) pydensecrf's symmetric normaliser ``1 / sqrt(filter(1) + 1e-20)``.
        splat: (M, N) CSR splat matrix with ``norm`` folded in.
    """

    lattice: Lattice
    blurs: list[torch.Tensor]
    norm: torch.Tensor
    splat: torch.Tensor

    @classmethod
    def from_lattice(cls, lat: Lattice, blur_group: int | None = None) -> LatticeKernel:
        """Blur matrices, and the normaliser from an unnormalised pass on ones (pydensecrf's initLattice).

        Args:
            lat: the lattice.
            blur_group: directions composed per blur matrix (default: 3 for d >= 4, else 1).
        """
        blurs = _blur_matrices(lat, blur_group or (3 if lat.d >= 4 else 1))
        ones = torch.ones(lat.num_points, device=lat.device)
        unnormalised = cls(lat, blurs, ones, _splat_matrix(lat, ones))
        norm = 1.0 / torch.sqrt(PairwiseOperator([(unnormalised, 1.0)]).ones_message + 1e-20)
        return cls(lat, blurs, norm, _splat_matrix(lat, norm))


class PairwiseOperator:
    """The summed Potts messages of several lattice kernels, as a linear map on (N, C) marginals.

    ``apply(Q)`` returns ``sum_k w_k * norm_k * filter_k(norm_k * Q)``. Each kernel splats into its own
    rows of two shared grid buffers and blurs there; one slice matrix over all kernels' vertices (with
    ``alpha``, the normalisers and the Potts weights folded in) gathers and sums the messages.

    Args:
        kernels: (kernel, Potts weight) pairs over the same N pixels.
    """

    def __init__(self, kernels: Sequence[tuple[LatticeKernel, float]]) -> None:
        if not kernels:
            raise ValueError("PairwiseOperator needs at least one kernel")
        self.kernels = [k for k, _ in kernels]
        lats = [k.lattice for k in self.kernels]
        n = self.num_points = lats[0].num_points
        self.device = lats[0].device
        if any(lat.num_points != n for lat in lats):
            raise ValueError("all kernels of a PairwiseOperator must cover the same pixels")
        self.offsets = [sum(lat.num_vertices for lat in lats[:i]) for i in range(len(lats))]
        self.num_vertices = self.offsets[-1] + lats[-1].num_vertices
        weights = [float(w) for _, w in kernels]
        scales = [k.norm * w for k, w in zip(self.kernels, weights, strict=True)]
        self._slice = _slice_matrix(lats, self.offsets, scales)
        self._buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        ones = torch.ones(n, 1, device=self.device)
        #: (N,) the message of an all-ones marginal: msg(Q_1) + ... + msg(Q_K) for any problem.
        self.ones_message = self.apply(ones)[:, 0].clone()
        #: a bound on |message| for marginals in [0, 1] (lets the softmax skip its max subtraction).
        if all(w >= 0 for w in weights):
            self.message_bound = float(self.ones_message.max()) if n else 0.0
        else:
            abs_scales = [k.norm * abs(w) for k, w in zip(self.kernels, weights, strict=True)]
            abs_slice = _slice_matrix(lats, self.offsets, abs_scales)
            self.message_bound = float(self._splat_blur_slice(abs_slice, ones).max()) if n else 0.0
        self._buffers.clear()

    def _grids(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        if c not in self._buffers:
            self._buffers.clear()  # keep one width: the buffers are tens of MB
            shape = (self.num_vertices, c)
            self._buffers[c] = (torch.empty(shape, device=self.device), torch.empty(shape, device=self.device))
        return self._buffers[c]

    def _splat_blur_slice(self, slice_mat: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None):
        a, b = self._grids(x.shape[1])
        for kern, off in zip(self.kernels, self.offsets, strict=True):
            rows = slice(off, off + kern.lattice.num_vertices)
            # Ping-pong between the buffers, starting where the last blur lands in ``a``.
            src, dst = (a[rows], b[rows]) if len(kern.blurs) % 2 == 0 else (b[rows], a[rows])
            _spmm(src, kern.splat, x)
            for blur in kern.blurs:
                _spmm(dst, blur, src)
                src, dst = dst, src
        out = torch.empty_like(x) if out is None else out
        _spmm(out, slice_mat, a)
        return out

    def apply(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Summed messages of ``x``.

        Args:
            x: (N, C) float32 contiguous marginals (any C).
            out: optional (N, C) float32 buffer for the result (may be a row-strided view).

        Returns:
            (N, C) float32.
        """
        return self._splat_blur_slice(self._slice, x, out)


@functools.lru_cache(maxsize=2)
def _position_kernel(height: int, width: int, sxy: float, device: torch.device) -> LatticeKernel:
    # The position-only kernel depends on the image size alone: datasets repeat a few sizes.
    feats = gaussian_features(height, width, sxy, device)
    return LatticeKernel.from_lattice(build_lattice(feats, vertex_order="first_touch"))


def clear_kernel_cache() -> None:
    """Forget cached position kernels (for cold timings, or to free their memory)."""
    _position_kernel.cache_clear()


def build_operator(image: torch.Tensor, params: CRFParams) -> PairwiseOperator:
    """The pairwise operator of the URN/PMM CRF on one image.

    Args:
        image: (H, W, 3) uint8 tensor (RGB), on the device to compute on.
        params: kernel widths and Potts weights.
    """
    h, w, _ = image.shape
    gauss = _position_kernel(h, w, float(params.gaussian_sxy), image.device)
    feats = bilateral_features(image, params.bilateral_sxy, params.bilateral_srgb, image.device)
    bilat = LatticeKernel.from_lattice(build_lattice(feats))
    # pydensecrf adds the Gaussian kernel first; the order only changes float rounding.
    return PairwiseOperator([(gauss, params.gaussian_compat), (bilat, params.bilateral_compat)])


def _strided_out_ok(device: torch.device) -> bool:
    """Whether sparse products may write into a row-strided view (MKL: yes; cuSPARSE: not relied on)."""
    return device.type == "cpu"


# Without the max subtraction exp() stays far from overflow/underflow while |logits| < 60.
_NO_MAX_LIMIT = 60.0


def _softmax_labels_(x: torch.Tensor, subtract_max: bool, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """In-place softmax over the label axis of (N, K, G) logits (G problems with K labels each).

    The exp and the final scaling run over the whole contiguous tensor; only the per-problem sums
    touch label planes ``x[:, k, :]``. ``scratch`` is an optional (N, G) buffer (fresh allocations
    of image-sized tensors cost page faults on every iteration).
    """
    n, k, g = x.shape
    if g == 1:  # one problem (the main CRF): each pixel's labels are one contiguous row
        rows = x.view(n, k)
        if subtract_max:
            rows.sub_(rows.amax(1, keepdim=True))
        rows.exp_()
        rows.div_(rows.sum(1, keepdim=True))
        return x
    s = torch.empty(n, g, device=x.device) if scratch is None else scratch
    if subtract_max:
        s.copy_(x[:, 0])
        for i in range(1, k):
            torch.maximum(s, x[:, i], out=s)
        x.sub_(s[:, None, :])
    x.exp_()
    s.copy_(x[:, 0])
    for i in range(1, k):
        s.add_(x[:, i])
    x.mul_(s.reciprocal_()[:, None, :])
    return x


def mean_field(op: PairwiseOperator, unary: torch.Tensor, iters: int, *, complement: bool = True) -> torch.Tensor:
    """Mean-field inference for G independent problems with the same label count K.

    Args:
        op: the image's pairwise operator.
        unary: (G, K, N) float32 unary energies (``-log p``).
        iters: mean-field iterations.
        complement: derive the last label's message from ``op.ones_message`` instead of filtering it.

    Returns:
        (K, G, N) float32 marginals (problem g is ``out[:, g]``).
    """
    g, k, n = unary.shape
    # Pixel-major (N, K, G): the filter reads and writes each pixel's channels as one row, and the
    # softmax works on label planes. Built with 2-d transposes (much faster than 3-d permute copies).
    neg_unary = unary.transpose(0, 1).reshape(k * g, n).t().contiguous().neg_().view(n, k, g)
    subtract_max = float(unary.max()) + op.message_bound >= _NO_MAX_LIMIT if unary.numel() else True
    scratch = torch.empty(n, g, device=unary.device)
    q = _softmax_labels_(neg_unary.clone(), subtract_max, scratch)
    if k > 1 and iters > 0:
        kf = k - 1 if complement else k
        x = torch.empty(n, kf, g, device=unary.device) if complement else None
        logits = torch.empty_like(q)
        msg = None if _strided_out_ok(unary.device) else torch.empty(n, kf * g, device=unary.device)
        for _ in range(iters):
            if x is not None:
                x.copy_(q[:, :kf])
            # Messages go straight into the logits buffer (a row-strided view: no copy with MKL).
            msg_out = msg if msg is not None else logits.view(n, k * g)[:, : kf * g]
            op.apply((q if x is None else x).view(n, kf * g), out=msg_out)
            if msg is not None:
                logits[:, :kf].copy_(msg.view(n, kf, g))
            if complement:
                # The last label's message: msg(1) - sum of the others (marginals sum to one).
                last = logits[:, k - 1]
                if g == 1:  # contiguous rows: one reduction
                    torch.sub(op.ones_message[:, None], logits[:, :kf].sum(1), out=last)
                else:  # label planes: elementwise passes
                    torch.sub(op.ones_message[:, None], logits[:, 0], out=last)
                    for i in range(1, kf):
                        last.sub_(logits[:, i])
            logits.add_(neg_unary)
            q, logits = _softmax_labels_(logits, subtract_max, scratch), q
    return q.view(n, k * g).t().contiguous().view(k, g, n)
