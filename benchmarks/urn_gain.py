"""Does URN's second training beat the first? The demo pipeline over several generator seeds.

For each seed, ``urn data demo`` draws a fresh dataset and ``urn run demo`` runs the whole pipeline on
it (CAMs -> PMM -> Seg-1 -> uncertainty -> Seg-2 -> evaluation), exactly as ``make demo`` does. One row
per seed: pseudo-mask and cyclic-mask mIoU (train), Seg-1 and Seg-2 mIoU on the demo's own val
images, the shares of the cyclic masks' foreground / background pixels that the hard weighting mutes,
and Seg-1 / Seg-2 on a large held-out **test set** (``--test-images`` images of ``urn data demo`` drawn
with ``--test-seed``, scored like the evaluate stage: multi-scale + flip + CRF). Twenty val images
moved a model's mIoU by several points (the demo now draws 100); the 300-image test set decides.

``--weightings`` also trains Seg-2 with other loss weightings (``seg2.weighting``: hard, soft, none; a
``:class`` suffix also sets ``seg2.weight_balance=class``, e.g. ``hard:class``) on the same cyclic masks
and uncertainty, and scores each on the test set, so the comparison of the weightings uses the same Seg-1
and the same masks.

Usage::

    python benchmarks/urn_gain.py                          # seeds 0 (the demo's) 1 2 3, hard only
    python benchmarks/urn_gain.py --weightings hard soft none hard:class --keep /tmp/gain
    python benchmarks/urn_gain.py --seeds 0 1 seg2.weighting=soft

Last line: ``seeds=N seg2_above_seg1=K cyclic_above_pseudo=K`` (goal: K = N for both); Seg-2 against
Seg-1 is counted on the test set, with the preset's weighting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from urn.config import load_config, with_values
from urn.data.demo import make_demo
from urn.stages.configs import stage_configs
from urn.stages.pipeline import run_pipeline
from urn.stages.segmentation import run_eval, run_train


def test_miou(test_root: Path, checkpoint: Path, overrides: list[str]) -> float:
    """mIoU (%) of ``checkpoint`` on the test set's val split, with the preset's inference (MS + flip + CRF)."""
    cfg = load_config("demo", [*overrides, f"data.root={test_root}"])
    _, result = run_eval(cfg, checkpoint, split="val", quiet=True)
    return result["miou"]


def weighting_name(weighting: str, balance: str) -> str:
    """``hard``, or ``hard:class`` when the weights are also balanced per class."""
    return weighting if balance == "none" else f"{weighting}:{balance}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--test-images", type=int, default=300, help="held-out test images")
    parser.add_argument("--test-seed", type=int, default=100, help="generator seed of the test set")
    parser.add_argument(
        "--weightings", nargs="+", default=None, help="Seg-2 loss weightings to compare (default: the preset's)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs under this folder (and reuse them)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every run")
    args = parser.parse_args()
    preset_cfg = load_config("demo", list(args.overrides)).seg2
    preset = weighting_name(preset_cfg.weighting, preset_cfg.weight_balance)
    weightings = args.weightings or [preset]
    names = ["seed", "pseudo", "cyclic", "seg1", "seg2", "fg_muted", "bg_muted", "min", "t_seg1"]
    names += [f"t_seg2_{w}" for w in weightings]
    print(" ".join(f"{n:>8}" for n in names), flush=True)
    seg2_wins = cyclic_wins = 0
    gains: dict[str, list[float]] = {w: [] for w in weightings}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        test_root = base / f"test_{args.test_seed}_{args.test_images}"
        make_demo(test_root, n_train=1, n_val=args.test_images, seed=args.test_seed)
        for seed in args.seeds:
            root, run_dir = base / f"data_{seed}", base / f"run_{seed}"
            make_demo(root, seed=seed)
            cfg = load_config("demo", [f"data.root={root}", *args.overrides])
            t0 = time.perf_counter()
            metrics = run_pipeline(cfg, run_dir, quiet=True)
            t_seg1 = test_miou(test_root, run_dir / "seg1" / "last.pt", args.overrides)
            t_seg2: dict[str, float] = {}
            for w in weightings:
                ckpt = run_dir / "seg2" / "last.pt"
                if w != preset:  # the same cyclic masks and uncertainty, another loss weighting
                    weighting, _, balance = w.partition(":")
                    values = {"seg2.weighting": weighting, "seg2.weight_balance": balance or "none"}
                    variant = with_values(stage_configs(cfg, run_dir)["seg2"], values)
                    folder = run_dir / f"seg2_{w.replace(':', '_')}"
                    ckpt = run_train(variant, folder, phase="seg2", resume=True, quiet=True)
                t_seg2[w] = test_miou(test_root, ckpt, args.overrides)
                gains[w].append(t_seg2[w] - t_seg1)
            minutes = (time.perf_counter() - t0) / 60
            m, u = metrics["miou"], metrics.get("uncertainty") or {}
            seg2_wins += t_seg2.get(preset, m["seg2"]) > t_seg1
            cyclic_wins += m["cyclic_masks"] > m["pseudo_masks"]
            row = [f"{seed:>8}"] + [f"{m[k]:8.1f}" for k in ("pseudo_masks", "cyclic_masks", "seg1", "seg2")]
            row += [
                f"{100 * u.get(f'{part}_downweighted_by_hard', float('nan')):7.1f}%"
                for part in ("foreground", "background")
            ]
            row += [f"{minutes:8.1f}", f"{t_seg1:8.1f}"] + [f"{t_seg2[w]:8.1f}" for w in weightings]
            print(" ".join(row), flush=True)
    for w, g in gains.items():
        spread = statistics.stdev(g) if len(g) > 1 else float("nan")
        wins = sum(x > 0 for x in g)
        mean = statistics.mean(g)
        print(f"test set, Seg-2 ({w}) - Seg-1: mean {mean:+.2f}  sd {spread:.2f}  above in {wins}/{len(g)}")
    n = len(args.seeds)
    print(f"seeds={n} seg2_above_seg1={seg2_wins} cyclic_above_pseudo={cyclic_wins}")


if __name__ == "__main__":
    main()
