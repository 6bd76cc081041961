"""Does URN's second training beat the first? The demo pipeline over several generator seeds.

For each seed, ``urn data demo`` draws a fresh dataset and ``urn run demo`` runs the whole pipeline on
it (CAMs -> PMM -> Seg-1 -> uncertainty -> Seg-2 -> evaluation), exactly as ``make demo`` does. One row
per seed: pseudo-mask and cyclic-mask mIoU (train), Seg-1 and Seg-2 mIoU (val), and the shares of the
cyclic masks' foreground / background pixels that the hard weighting mutes.

Usage::

    python benchmarks/urn_gain.py                     # seeds 0 (the demo's) 1 2 3, ~7 min each on 2 cores
    python benchmarks/urn_gain.py --seeds 0 1 seg2.weighting=soft

Last line: ``seeds=N seg2_above_seg1=K cyclic_above_pseudo=K`` (goal: K = N for both).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from urn.config import load_config
from urn.data.demo import make_demo
from urn.stages.pipeline import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs under this folder")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every run")
    args = parser.parse_args()
    names = ("seed", "pseudo", "cyclic", "seg1", "seg2", "fg_muted", "bg_muted", "min")
    widths = (4, 7, 7, 6, 6, 8, 8, 5)
    print(" ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)), flush=True)
    seg2_wins = cyclic_wins = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for seed in args.seeds:
            root, run_dir = base / f"data_{seed}", base / f"run_{seed}"
            make_demo(root, seed=seed)
            cfg = load_config("demo", [f"data.root={root}", *args.overrides])
            t0 = time.perf_counter()
            metrics = run_pipeline(cfg, run_dir, quiet=True)
            minutes = (time.perf_counter() - t0) / 60
            m, u = metrics["miou"], metrics.get("uncertainty") or {}
            seg2_wins += m["seg2"] > m["seg1"]
            cyclic_wins += m["cyclic_masks"] > m["pseudo_masks"]
            print(
                f"{seed:>4} {m['pseudo_masks']:7.1f} {m['cyclic_masks']:7.1f} {m['seg1']:6.1f} {m['seg2']:6.1f} "
                f"{100 * u.get('foreground_downweighted_by_hard', float('nan')):7.1f}% "
                f"{100 * u.get('background_downweighted_by_hard', float('nan')):7.1f}% {minutes:5.1f}",
                flush=True,
            )
    n = len(args.seeds)
    print(f"seeds={n} seg2_above_seg1={seg2_wins} cyclic_above_pseudo={cyclic_wins}")


if __name__ == "__main__":
    main()
