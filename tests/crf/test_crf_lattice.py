"""The torch permutohedral lattice: structure, and agreement with pydensecrf's filtering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from urn.crf import URN_CRF, CRFSolver
from urn.crf.batched import LatticeKernel, PairwiseOperator
from urn.crf.lattice import Lattice, bilateral_features, build_lattice, gaussian_features


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 7 + c * 50) % 256 for c in range(3)], -1) * (yy[..., None] > h // 2)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def filter_reference(lattice: Lattice, values: torch.Tensor) -> torch.Tensor:
    """Splat, blur and slice with plain gathers/scatters (the readable version; used by tests).

    Args:
        lattice: the lattice of the N points.
        values: (N, C) float32.

    Returns:
        (N, C) float32, the lattice approximation of the Gaussian filter of ``values``.
    """
    n, c = values.shape
    d1 = lattice.d + 1
    m = lattice.num_vertices
    grid = values.new_zeros(m + 1, c)  # row m: the zero value of a missing neighbour
    contrib = (lattice.weight[:, :, None] * values[:, None, :]).reshape(-1, c)
    grid.index_add_(0, lattice.vertex.reshape(-1), contrib)
    for j in range(d1):
        n1, n2 = lattice.neighbors[j]
        blurred = grid[:m] + 0.5 * (grid[n1] + grid[n2])
        grid = torch.cat([blurred, grid[m:]])
    gathered = grid[lattice.vertex.reshape(-1)].view(n, d1, c)
    return (gathered * (lattice.weight * lattice.alpha)[:, :, None]).sum(1)


@pytest.mark.parametrize("order", ["code", "first_touch"])
@pytest.mark.parametrize("shape", [(12, 16), (7, 9)])  # 7x9 = 63 points: exercises the SSE padding
def test_lattice_structure(shape: tuple[int, int], order: str) -> None:
    img = torch.from_numpy(_image(*shape))
    for feats in (gaussian_features(*shape, 1.0), bilateral_features(img, 5.0, 3.0)):
        lat = build_lattice(feats, vertex_order=order)
        n, d = feats.shape
        assert lat.vertex.shape == lat.weight.shape == (n, d + 1)
        assert torch.allclose(lat.weight.sum(1), torch.ones(n), atol=1e-5)
        assert (lat.weight >= -1e-6).all()
        assert int(lat.vertex.max()) < lat.num_vertices
        # Neighbour relations are mutual: n1 of a vertex has that vertex as its n2.
        for j in range(d + 1):
            n1, n2 = lat.neighbors[j]
            has = n1 < lat.num_vertices
            assert torch.equal(n2[n1[has]], torch.arange(lat.num_vertices)[has])
        # The CSR order lists every (point, corner) once, grouped by vertex.
        assert torch.equal(torch.sort(lat.order).values, torch.arange(n * (d + 1)))
        assert (torch.diff(lat.vertex.reshape(-1)[lat.order]) >= 0).all()


def test_vertex_order_does_not_change_the_filter() -> None:
    feats = bilateral_features(torch.from_numpy(_image(9, 13)), 4.0, 3.0)
    x = torch.rand(117, 3, generator=torch.Generator().manual_seed(1))
    a = filter_reference(build_lattice(feats, vertex_order="code"), x)
    b = filter_reference(build_lattice(feats, vertex_order="first_touch"), x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="vertex_order"):
        build_lattice(feats, vertex_order="random")


@pytest.mark.parametrize("group", [1, 2, 3, 5])
def test_composed_blurs_equal_sequential_blurs(group: int) -> None:
    from urn.crf.batched import _blur_matrices

    lat = build_lattice(bilateral_features(torch.from_numpy(_image(11, 13)), 4.0, 3.0))
    v = torch.rand(lat.num_vertices, 4, generator=torch.Generator().manual_seed(2))
    seq, comp = v.clone(), v.clone()
    for blur in _blur_matrices(lat, 1):
        seq = blur @ seq
    blurs = _blur_matrices(lat, group)
    assert len(blurs) == -(-6 // min(group, 5))
    for blur in blurs:
        comp = blur @ comp
    assert torch.allclose(comp, seq, rtol=1e-5, atol=1e-6)


def test_sparse_operator_matches_gather_filter() -> None:
    img = torch.from_numpy(_image(10, 14))
    gauss = build_lattice(gaussian_features(10, 14, 1.0), vertex_order="first_touch")
    bilat = build_lattice(bilateral_features(img, 4.0, 3.0))
    op = PairwiseOperator([(LatticeKernel.from_lattice(gauss), 3.0), (LatticeKernel.from_lattice(bilat), 4.0)])
    x = torch.rand(140, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros_like(x)
    for lat, w in ((gauss, 3.0), (bilat, 4.0)):
        norm = 1.0 / torch.sqrt(filter_reference(lat, torch.ones(140, 1)) + 1e-20)
        expected += w * norm * filter_reference(lat, norm * x)
    assert torch.allclose(op.apply(x.contiguous()), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(op.ones_message, op.apply(torch.ones(140, 1))[:, 0])


@pytest.mark.parametrize("shape", [(20, 30), (7, 9)])
@pytest.mark.parametrize("kernel", ["gaussian", "bilateral"])
def test_one_iteration_matches_pydensecrf(shape: tuple[int, int], kernel: str) -> None:
    """One mean-field step isolates one kernel's filter: the marginals must agree to float rounding."""
    pytest.importorskip("pydensecrf")
    rng = np.random.default_rng(1)
    img = _image(*shape, seed=2)
    probs = rng.dirichlet(np.ones(3), size=shape).transpose(2, 0, 1).astype(np.float32)
    off = {"gaussian_compat": 0.0} if kernel == "bilateral" else {"bilateral_compat": 0.0}
    params = dataclasses.replace(URN_CRF, bilateral_sxy=9.0, iters=1, **off)
    ref = CRFSolver(img, params, backend="pydensecrf").run([probs])[0]
    ours = CRFSolver(img, params, backend="batched", complement=False).run([probs])[0]
    np.testing.assert_allclose(ours, ref, atol=2e-6)
