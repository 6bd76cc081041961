"""Response-scaling CRFs: the reference loop (one pydensecrf call per problem) vs the batched backend.

For each test image, 1 + 6K dense CRFs run: the main CRF over all C classes, then 6 exponents x K
present classes. The reference style builds both lattices again for every call; the batched backend
builds them once per image and filters all problems' label channels together.

Run::

    .venv/bin/python benchmarks/crf_speed.py              # synthetic 320x480, K = 2, 3, 5 (+ photo)
    .venv/bin/python benchmarks/crf_speed.py --repeat 3   # best of 3 (use on a busy machine)

The last line reads ``speedup=X.X agreement=Y.YY% weights_within=Z.ZZ% threads=U/1``: total reference
time over total batched time; the worst per-problem argmax agreement (over all 1 + 6K problems of all
images); the share of pixels whose weight byte differs by at most 1; urn's torch threads (``--threads``)
against pydensecrf's one. The line before it bounds the design: the batched path's time in its sparse
products, and the speedup it would reach were everything else free.

The helpers (:func:`make_case`, :func:`run_response_scaling`, :func:`compare`) are importable, e.g. by a
benchmark that adds the network's forward passes in front.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from urn.crf import URN_CRF, CRFParams, CRFSolver
from urn.crf.batched import clear_kernel_cache
from urn.uncertainty_core import (
    VOC_EXPONENTS,
    loss_weights_from_uncertainty,
    normalise_uncertainty,
    scaled_energies,
    scaled_problems,
    uncertainty_from_argmaxes,
)

# --------------------------------------------------------------------------------------------- inputs


def _smooth_field(h: int, w: int, rng: np.random.Generator, waves: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]: a sum of a few low-frequency plane waves."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w))
    for _ in range(waves):
        fx, fy = rng.uniform(-1, 1, 2) * 2 * np.pi / rng.uniform(80, 300)
        out += np.cos(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
    return out / waves


def make_case(
    num_present: int, *, h: int = 320, w: int = 480, num_classes: int = 21, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic photo-like image and smooth averaged-softmax maps with ``num_present`` classes.

    Objects are blobs with their own colour, shading and texture on a graded background; the class
    probabilities follow the objects but with soft, slightly misplaced boundaries (as a network's
    would), and the classes that are not present keep small non-zero probabilities.

    Returns:
        image (H, W, 3) uint8 RGB and probs (num_classes, H, W) float32 summing to 1 per pixel.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    classes = [0, *rng.choice(np.arange(1, num_classes), num_present - 1, replace=False)]
    # Background: a coloured gradient with soft shading.
    img = np.empty((h, w, 3))
    for c in range(3):
        img[..., c] = 110 + 60 * _smooth_field(h, w, rng) + 25 * (c - 1) * yy / h
    logits = np.full((num_classes, h, w), -3.0) + 0.5 * rng.normal(size=(num_classes, 1, 1))
    logits[0] = 1.0
    for cls in classes[1:]:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.12, 0.3) * w
        wobble = 1 + 0.15 * _smooth_field(h, w, rng, waves=3)
        inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / wobble
        obj = inside < 1
        colour = rng.uniform(30, 225, 3)
        shade = 30 * _smooth_field(h, w, rng)
        for c in range(3):
            img[..., c] = np.where(obj, colour[c] + shade, img[..., c])
        # The network's belief: a soft version of the object, shifted by a few pixels.
        shifted = ((yy - cy - rng.uniform(-6, 6)) / ry) ** 2 + ((xx - cx - rng.uniform(-6, 6)) / rx) ** 2
        logits[cls] = 4.0 * (1 - shifted / wobble) + 1.0 * _smooth_field(h, w, rng, waves=6)
    logits += 0.8 * np.stack([_smooth_field(h, w, rng, waves=5) for _ in range(num_classes)])
    img += rng.normal(0, 3.0, img.shape)  # sensor noise and fine texture
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    return np.clip(img, 0, 255).astype(np.uint8), probs.astype(np.float32)


def photo_case(num_present: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """matplotlib's sample photograph cropped to 320x480, with :func:`make_case`'s probabilities."""
    try:
        import matplotlib
        from PIL import Image
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        return None
    photo = np.asarray(Image.open(path).convert("RGB"))[140:460, 16:496]
    _, probs = make_case(num_present, h=320, w=480, seed=seed)
    return np.ascontiguousarray(photo), probs


# ------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def timed_products() -> Iterator[list[float]]:
    """Accumulate the wall time of the batched backend's sparse products (CPU only: CUDA is async).

    Yields a one-element list that holds the seconds spent in :func:`urn.crf.batched._spmm` so far: the
    lattice filtering (splat, blurs, slice) at setup and in every mean-field iteration. With everything
    else free, a path could be at most ``reference / products`` times faster than the reference.
    """
    from urn.crf import batched

    spent = [0.0]
    original = batched._spmm

    def spmm(*args, **kwargs):
        t = time.perf_counter()
        original(*args, **kwargs)
        spent[0] += time.perf_counter() - t

    batched._spmm = spmm
    try:
        yield spent
    finally:
        batched._spmm = original


@dataclass
class Run:
    """Everything one backend produced for one image, with timings in seconds."""

    mask: np.ndarray
    present: tuple[int, ...]
    argmaxes: list[np.ndarray]  # base problem first, then the 6K scaled problems
    weights: np.ndarray
    times: dict[str, float] = field(default_factory=dict)
    cpu: float = 0.0  # process CPU seconds (all threads): robust to other load when single-threaded
    products: float = 0.0  # batched on CPU: seconds inside the lattice filter's sparse products

    @property
    def total(self) -> float:
        return sum(self.times.values())


def run_response_scaling(
    image: np.ndarray,
    probs: np.ndarray,
    backend: str,
    *,
    exponents: tuple[float, ...] = VOC_EXPONENTS,
    params: CRFParams = URN_CRF,
    device: str | None = None,
    cold: bool = True,
) -> Run:
    """:func:`urn.uncertainty_core.response_scaling`, instrumented: keeps every problem's argmax.

    Times: ``build`` (lattices and filter matrices; ~0 for pydensecrf, whose calls rebuild them),
    ``main`` (the C-label CRF), ``scaled`` (the 6K response-scaling CRFs); ``products``, the part of
    them spent in the lattice filter's sparse products (batched on CPU). ``cold`` clears the batched
    backend's cache of position kernels first (they are reused across same-size images).
    """
    if cold:
        clear_kernel_cache()
    with timed_products() as products:
        run = _response_scaling(image, probs, backend, exponents, params, device)
    if backend == "batched" and (device is None or torch.device(device).type == "cpu"):
        run.products = products[0]
    return run


def _response_scaling(image, probs, backend, exponents, params, device) -> Run:
    c0 = time.process_time()
    t0 = time.perf_counter()
    solver = CRFSolver(image, params, backend=backend, device=device)
    t1 = time.perf_counter()
    q = solver.run([probs])[0]
    mask = q.argmax(0).astype(np.uint8)
    present = tuple(int(c) for c in np.unique(mask))
    t2 = time.perf_counter()
    if len(present) < 2:
        outs = []
    elif backend == "pydensecrf":  # the reference: each P' as probabilities, one call each
        outs = solver.run(scaled_problems(probs[list(present)], exponents))
    else:  # as response_scaling does
        outs = solver.run_energies(scaled_energies(probs[list(present)], exponents, params.prob_floor))
    argmaxes = [o.argmax(0) for o in outs]
    t3 = time.perf_counter()
    raw = uncertainty_from_argmaxes(np.stack(argmaxes), len(exponents)) if argmaxes else np.zeros(mask.shape)
    weights = loss_weights_from_uncertainty(normalise_uncertainty(raw))
    times = {"build": t1 - t0, "main": t2 - t1, "scaled": t3 - t2}
    return Run(mask, present, [mask, *argmaxes], weights, times, time.process_time() - c0)


def threads_label(device: str | None) -> str:
    """``urn/reference`` threads of the last line: torch's intra-op threads (or the GPU) over pydensecrf's one."""
    urn = "cuda" if device and torch.device(device).type == "cuda" else str(torch.get_num_threads())
    return f"{urn}/1"


def print_products_bound(reference: float, batched: float, products: float) -> None:
    """The ceiling the sparse products set: ``reference / products`` (CPU runs; nothing on CUDA)."""
    if products > 0:
        print(
            f"sparse products: {products:.2f}s of batched {batched:.2f}s ({products / batched:.0%}); "
            f"were all else free, the speedup would be {reference / products:.1f}"
        )


def compare(ref: Run, fast: Run) -> dict[str, float]:
    """Agreement of ``fast`` with ``ref``: cyclic mask, per problem (worst and mean), weight bytes."""
    per_problem = (
        [float((a == b).mean()) for a, b in zip(ref.argmaxes, fast.argmaxes, strict=True)]
        if ref.present == fast.present
        else [float((ref.mask == fast.mask).mean()), 0.0]  # different L: the scaled problems differ
    )
    diff = np.abs(ref.weights.astype(int) - fast.weights.astype(int))
    return {
        "mask": per_problem[0],
        "worst": min(per_problem),
        "mean": float(np.mean(per_problem)),
        "weights_within": float((diff <= 1).mean()),
    }


def _clock(fn, repeat: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _spmm_time(mat: torch.Tensor, dst: torch.Tensor, src: torch.Tensor) -> float:
    return _clock(lambda: torch.addmm(dst, mat, src, beta=0, out=dst), 3)


def _time_products(op, n: int, c: int) -> dict[str, float]:
    """Seconds per sparse product of one message pass of ``op`` at ``c`` channels."""
    x, out = torch.rand(n, c), torch.empty(n, c)
    a, b = op._grids(c)
    parts = {}
    for kname, kern, off in zip(("gauss", "bilat"), op.kernels, op.offsets, strict=True):
        rows = slice(off, off + kern.lattice.num_vertices)
        parts[f"splat_{kname}"] = _spmm_time(kern.splat, a[rows], x)
        parts[f"blur_{kname}"] = sum(_spmm_time(bl, b[rows], a[rows]) for bl in kern.blurs)
    parts["slice"] = _spmm_time(op._slice, out, a)
    return parts


def profile_batched(image: np.ndarray, probs: np.ndarray, present: tuple[int, ...], params=URN_CRF) -> None:
    """Print where the batched backend spends its time on one image (best of 3 where repeated).

    Lattice construction, filter setup, and per mean-field iteration: each sparse product (splat,
    blur, slice per kernel) against everything else (copies, last-label message, softmax).
    """
    from urn.crf.batched import LatticeKernel, PairwiseOperator, mean_field
    from urn.crf.lattice import bilateral_features, build_lattice, gaussian_features
    from urn.crf.reference import unary_energy

    h, w = image.shape[:2]
    img_t = torch.from_numpy(image)
    gf = gaussian_features(h, w, params.gaussian_sxy)
    bf = bilateral_features(img_t, params.bilateral_sxy, params.bilateral_srgb)
    t_lg = _clock(lambda: build_lattice(gf, vertex_order="first_touch"), 3)
    t_lb = _clock(lambda: build_lattice(bf), 3)
    lg, lb = build_lattice(gf, vertex_order="first_touch"), build_lattice(bf)
    t_kg = _clock(lambda: LatticeKernel.from_lattice(lg), 3)
    t_kb = _clock(lambda: LatticeKernel.from_lattice(lb), 3)
    kern = [
        (LatticeKernel.from_lattice(lg), params.gaussian_compat),
        (LatticeKernel.from_lattice(lb), params.bilateral_compat),
    ]
    t_op = _clock(lambda: PairwiseOperator(kern), 3)
    op = PairwiseOperator(kern)
    print(
        f"profile: lattices gaussian {1e3 * t_lg:.0f} ms (M={lg.num_vertices}), bilateral {1e3 * t_lb:.0f} ms "
        f"(M={lb.num_vertices}); kernel setup (blur matrices, normaliser) {1e3 * t_kg:.0f} + {1e3 * t_kb:.0f} ms; "
        f"operator {1e3 * t_op:.0f} ms"
    )
    main_u = torch.from_numpy(unary_energy(probs, params.prob_floor))[None]
    probs_l = probs[list(present)]
    scaled = torch.from_numpy(
        np.stack([unary_energy(p, params.prob_floor) for p in scaled_problems(probs_l, VOC_EXPONENTS)])
    )
    n = h * w
    for name, u in (("main", main_u), ("scaled", scaled[: max(1, 64 // max(1, len(present) - 1))])):
        g, k, _ = u.shape
        c = (k - 1) * g
        parts = _time_products(op, n, c)
        t0 = _clock(lambda u=u: mean_field(op, u, 0), 2)
        t10 = _clock(lambda u=u: mean_field(op, u, 10), 1)
        per_it = (t10 - t0) / 10
        other = per_it - sum(parts.values())
        detail = ", ".join(f"{key} {1e3 * v:.1f}" for key, v in parts.items())
        print(
            f"profile {name}: {g} problem(s) x {k} labels, {c} filtered channels: per iteration {1e3 * per_it:.0f} ms "
            f"= {detail}, softmax/copies {1e3 * other:.1f} ms; setup+output {1e3 * t0:.0f} ms; "
            f"{1e3 * per_it / c:.2f} ms per channel-iteration"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--present", type=int, nargs="+", default=[2, 3, 5], help="classes present per image")
    ap.add_argument("--classes", type=int, default=21, help="C, channels of the main CRF")
    ap.add_argument("--no-photo", action="store_true", help="skip the sample-photograph images")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings (interleaved)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    ap.add_argument("--device", default=None, help="torch device of the batched backend (default cpu)")
    ap.add_argument("--warm", action="store_true", help="reuse cached position kernels across images")
    ap.add_argument("--profile", action="store_true", help="also print a time breakdown per image")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device or 'cpu'}")

    cases = [(f"synthetic K={k}", make_case(k, num_classes=args.classes, seed=k)) for k in args.present]
    if not args.no_photo:
        for k in args.present:
            photo = photo_case(k, seed=k)
            if photo is not None:
                cases.append((f"photo K={k}", photo))

    tot_ref = tot_fast = tot_products = 0.0
    worst, within = 1.0, []
    for name, (image, probs) in cases:
        best_ref = best_fast = None
        for _ in range(args.repeat):  # interleave, so that load from other processes hits both
            ref = run_response_scaling(image, probs, "pydensecrf")
            fast = run_response_scaling(image, probs, "batched", device=args.device, cold=not args.warm)
            best_ref = ref if best_ref is None or ref.total < best_ref.total else best_ref
            best_fast = fast if best_fast is None or fast.total < best_fast.total else best_fast
        assert best_ref is not None and best_fast is not None
        cmp = compare(best_ref, best_fast)
        n_problems = len(best_ref.argmaxes)
        t = best_fast.times
        print(
            f"{name:16s} L={best_ref.present} problems={n_problems:2d} "
            f"ref {best_ref.total:6.2f}s  batched {best_fast.total:5.2f}s "
            f"(build {t['build']:.2f} main {t['main']:.2f} scaled {t['scaled']:.2f}; "
            f"products {best_fast.products:.2f})  "
            f"x{best_ref.total / best_fast.total:4.1f} (cpu {best_ref.cpu:5.2f}s/{best_fast.cpu:5.2f}s "
            f"x{best_ref.cpu / best_fast.cpu:4.1f})  mask {100 * cmp['mask']:.3f}%  "
            f"problems worst {100 * cmp['worst']:.3f}% mean {100 * cmp['mean']:.4f}%  "
            f"weights<=1 {100 * cmp['weights_within']:.3f}%",
            flush=True,
        )
        if args.profile:
            profile_batched(image, probs, best_ref.present)
        tot_ref += best_ref.total
        tot_fast += best_fast.total
        tot_products += best_fast.products
        worst = min(worst, cmp["worst"])
        within.append(cmp["weights_within"])
    print(f"total: reference {tot_ref:.2f}s, batched {tot_fast:.2f}s over {len(cases)} images")
    print_products_bound(tot_ref, tot_fast, tot_products)
    print(
        f"speedup={tot_ref / tot_fast:.1f} agreement={100 * worst:.2f}% weights_within={100 * np.mean(within):.2f}% "
        f"threads={threads_label(args.device)}"
    )


if __name__ == "__main__":
    main()
