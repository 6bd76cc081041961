"""`urn run` end to end on a tiny demo set: every stage's outputs, the report, resume, weak supervision."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from urn.config import load_config
from urn.stages.pipeline import HEAT_STAGES, STAGES, run_pipeline

TINY = [
    "cam.backbone.name=resnet18",
    "cam.backbone.weights=null",
    "cam.iters=3",
    "cam.batch_size=2",
    "cam.crop_size=32",
    "cam.resize_long=[48, 64]",
    "cam.scales=[1.0]",
    "cam.num_workers=0",
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "model.head_channels=16",
    "model.aux_channels=8",
    "data.crop_size=32",
    "data.base_size=[64, 48]",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.iters=3",
    "train.ckpt_every=1",
    "seg2.batch_size=2",
    "seg2.iters=3",
    "seg2.ckpt_every=1",
    "infer.base_size=[64, 48]",
    "infer.scales=[0.75, 1.0]",
    "infer.mode=whole",
    "crf.iters=3",
]


def tiny(root: Path, *extra: str):
    return load_config("demo", [f"data.root={root}", *TINY, *extra])


@pytest.fixture(scope="module")
def finished_run(demo_root, tmp_path_factory) -> tuple[Path, str]:
    """One complete tiny run through the real `urn demo` command, shared by the tests that only read it.

    Returns the run folder and what the command printed.
    """
    from urn.cli import main

    run = tmp_path_factory.mktemp("pipeline") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
        main(["demo", "--out", str(run), "--data", str(demo_root), *TINY, "--quiet"])
    assert exited.value.code in (0, None), printed.getvalue()
    return run, printed.getvalue()


@pytest.mark.slow
def test_run_end_to_end_writes_every_stage_and_the_report(demo_root, finished_run):
    run, printed = finished_run
    stages = [s for s in STAGES if s not in HEAT_STAGES]  # the demo has no cam.heat_stage
    assert not (run / "heat_train").exists()
    for stage in stages:
        assert (run / stage / "DONE.json").is_file(), stage
    ids = (demo_root / "ImageSets/Segmentation/train.txt").read_text().split()
    for i in ids:
        assert (run / "cams" / f"{i}.npz").is_file() or list((run / "cams").glob(f"{i}.*"))
        assert (run / "pseudo_masks" / "masks" / f"{i}.png").is_file()
        assert (run / "uncertainty" / "masks" / f"{i}.png").is_file()
        assert (run / "uncertainty" / "uncertainty" / f"{i}.npy").is_file()
    for phase in ("seg1", "seg2"):
        assert (run / phase / "last.pt").is_file()
    on_disk = json.loads((run / "metrics.json").read_text())
    assert set(on_disk["miou"]) == {"pseudo_masks", "cyclic_masks", "seg1", "seg2"}
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in on_disk["miou"].values()), on_disk["miou"]
    assert set(on_disk["seconds"]) == set(stages) - {"report"} or set(on_disk["seconds"]) == set(stages)
    assert on_disk["config"]["data"]["root"] == str(demo_root)
    scores = ", ".join(f"{k}={v:.2f}" for k, v in on_disk["miou"].items())
    assert f"mIoU (%): {scores}\n" in printed
    assert all(f"note: {n}\n" in printed for n in on_disk["notes"])
    assert printed.endswith(f"report: {run / 'report.html'}\n")
    html = (run / "report.html").read_text()
    assert "<table id='miou'>" in html and html.count("data:image/png;base64,") >= 3 * 6  # 3 val images x 6 columns
    # the evaluate stage wrote the gallery's artefacts; the report only read them
    val_ids = (demo_root / "ImageSets/Segmentation/val.txt").read_text().split()
    gallery = run / "evaluate" / "gallery"
    assert json.loads((gallery / "gallery.json").read_text())["ids"] == val_ids[:6]
    for i in val_ids[:6]:
        assert (gallery / f"{i}_pseudo.png").is_file() and (gallery / f"{i}_uncertainty.png").is_file()
    # a rerun skips every complete stage
    before = {s: (run / s / "DONE.json").stat().st_mtime_ns for s in stages}
    run_pipeline(tiny(demo_root), run, quiet=True)
    assert before == {s: (run / s / "DONE.json").stat().st_mtime_ns for s in stages}


@pytest.mark.slow
def test_interrupted_run_resumes_mid_stage(demo_root, tmp_path, kill_when):
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "urn",
        "run",
        "demo",
        f"data.root={demo_root}",
        *TINY,
        "train.iters=6",
        "--until",
        "seg1",
        "--out",
        str(run),
        "--quiet",
    ]
    kill_when(args, lambda: (run / "seg1" / "last.pt").exists())
    assert not (run / "seg1" / "DONE.json").exists()  # killed inside seg1
    cam_done = (run / "cam_train" / "DONE.json").stat().st_mtime_ns
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert (run / "seg1" / "DONE.json").is_file()
    assert (run / "cam_train" / "DONE.json").stat().st_mtime_ns == cam_done  # not redone
    assert not list(run.rglob("*.urn-tmp"))
    from urn.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "seg1" / "last.pt")["iteration"] == 6


@pytest.mark.slow
def test_pipeline_runs_without_training_ground_truth(demo_copy, tmp_path):
    """Weak supervision only: every train GT mask is unreadable; the run completes, train scores are null."""
    train_ids = (demo_copy / "ImageSets/Segmentation/train.txt").read_text().split()
    for i in train_ids:
        gt = demo_copy / "SegmentationClass" / f"{i}.png"
        gt.unlink()
        gt.mkdir()  # not a file: any attempt to read it fails loudly
    metrics = run_pipeline(tiny(demo_copy), tmp_path / "run", until_stage="evaluate", quiet=True)
    assert metrics["miou"]["pseudo_masks"] is None and metrics["miou"]["cyclic_masks"] is None
    assert metrics["miou"]["seg2"] is not None
    assert any("pseudo-mask scores skipped" in n for n in metrics["notes"])


def test_unknown_stage_and_incomplete_earlier_stage(demo_root, tmp_path):
    from urn.errors import UrnError

    with pytest.raises(UrnError, match="unknown stage 'segx'"):
        run_pipeline(tiny(demo_root), tmp_path / "r", from_stage="segx")
    with pytest.raises(UrnError, match="earlier stage 'cam_train' is not complete"):
        run_pipeline(tiny(demo_root), tmp_path / "r", from_stage="seg1")


def test_user_pseudo_masks_skip_the_cam_stages(demo_root, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(demo_root / "SegmentationClass", masks)
    run_pipeline(tiny(demo_root, f"data.pseudo_masks={masks}"), tmp_path / "r", until_stage="seg1", quiet=True)
    assert not (tmp_path / "r" / "cam_train").exists()
    assert (tmp_path / "r" / "seg1" / "DONE.json").is_file()


# Flags the machine's closed network needs: without the background-networking ones Chromium keeps
# trying to reach Google's hosts; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the report: after the load event, lists what the browser actually rendered.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const probe = {
    tables: [...document.querySelectorAll('table')].map(t => t.id || t.className),
    images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    gallery_rows: document.querySelectorAll('table.gallery tr').length,
    miou_rows: [...document.querySelectorAll('#miou tr')].map(r => r.innerText.split('\\t')[0]),
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});</script>"""


def find_chromium() -> str | None:
    """Debian's chromium (``make browser`` installs it), or ``$URN_CHROMIUM``."""
    import os

    return os.environ.get("URN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH: `make browser` installs Debian's chromium")
    run, _ = finished_run
    page = tmp_path / "report.html"
    page.write_text((run / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    marker = '<pre id="probe">'
    assert marker in result.stdout, result.stdout[-2000:]
    probe = json.loads(result.stdout.split(marker, 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    assert {"miou", "per-class", "uncertainty", "gallery", "seconds"} <= set(probe["tables"]), probe
    assert probe["miou_rows"][1:] == ["PMM pseudo-masks", "cyclic masks", "Seg-1 (PUS)", "Seg-2 (URN)"], probe
    # header row + one row per val image, each row image | pseudo-mask | uncertainty | Seg-1 | Seg-2 | GT
    assert probe["gallery_rows"] == 1 + 3, probe
    assert probe["images"] >= 3 * 6 + 2, probe  # gallery + training curves + uncertainty plot
    assert probe["decoded"] == probe["images"], probe


def test_diagnose_names_each_broken_premise_and_nothing_when_all_is_well():
    from urn.stages.checks import diagnose

    good = {"pseudo_masks": 60.0, "cyclic_masks": 63.0, "seg1": 40.0, "seg2": 42.0}
    assert diagnose(good, {"foreground_downweighted_by_hard": 0.10, "background_downweighted_by_hard": 0.05}) == []
    assert diagnose({**good, "pseudo_masks": None}, None) == []

    demo = {"pseudo_masks": 61.49, "cyclic_masks": 47.56, "seg1": 38.01, "seg2": 23.96}
    notes = diagnose(demo, {"foreground_downweighted_by_hard": 0.51, "background_downweighted_by_hard": 0.053})
    assert len(notes) == 3
    assert "cyclic masks (47.6)" in notes[0] and "(61.5)" in notes[0]
    assert "51% of the cyclic masks' foreground" in notes[1] and "5% of background" in notes[1]
    assert "Seg-2 (24.0) scores below Seg-1 (38.0)" in notes[2]


def _stage1_yaml(tmp_path: Path) -> Path:
    """A stage-1 classifier config file, as `cam.heat_stage` names one (cam_voc12_wr38 on VOC)."""
    path = tmp_path / "stage1.yaml"
    path.write_text("base: demo\ncam:\n  network: plain\n")
    return path


def test_heat_stage_runs_pmm_two_stage_chain(demo_root, tmp_path):
    """cam.heat_stage: stage-1 classifier -> heat maps -> the classifier trained on heat-guided tiles."""
    stage1 = _stage1_yaml(tmp_path)
    run = tmp_path / "r"
    extra = [f"cam.heat_stage={stage1}", "cam.multi_crop=true", "cam.crop_scales=[1.0, 1.5]", "cam.crop_stride=24"]
    cfg = tiny(demo_root, *extra)
    # the stage-1 config gets a tiny classifier too (its own file, as a user would write it)
    text = "base: demo\ncam:\n  network: plain\n  iters: 2\n  backbone: {name: resnet18, weights: null}\n"
    text += "  batch_size: 2\n  crop_size: 32\n  resize_long: [48, 64]\n  scales: [1.0]\n  num_workers: 0\n"
    stage1.write_text(text)
    run_pipeline(cfg, run, until_stage="cams", quiet=True)
    ids = (demo_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert (run / "heat_train" / "DONE.json").is_file()
    assert sorted(p.stem for p in (run / "heat_maps" / "heat").glob("*.npz")) == sorted(ids)
    record = json.loads((run / "cam_train" / "DONE.json").read_text())
    assert record["config"]["cam"]["heat_dir"] == str(run / "heat_maps" / "heat")
    heat_record = json.loads((run / "heat_train" / "DONE.json").read_text())
    assert heat_record["config"]["cam"]["iters"] == 2 and heat_record["config"]["data"]["root"] == str(demo_root)
    assert len(list((run / "cams").glob("*.npz"))) == len(ids)

    # another stage-1 schedule: the chain from heat_train on was made with other values
    stage1.write_text(text.replace("iters: 2", "iters: 3"))
    from urn.errors import UrnError

    with pytest.raises(UrnError, match=r"heat_train was made with cam.iters=2, the command asks 3; rerun with"):
        run_pipeline(cfg, run, until_stage="cams", quiet=True)


def test_heat_stage_is_skipped_with_user_masks_and_absent_without_it(demo_root, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(demo_root / "SegmentationClass", masks)
    cfg = tiny(demo_root, f"data.pseudo_masks={masks}", f"cam.heat_stage={_stage1_yaml(tmp_path)}")
    run_pipeline(cfg, tmp_path / "r", until_stage="pseudo_masks", quiet=True)
    assert not (tmp_path / "r" / "heat_train").exists()
    assert load_config("voc12_r2n").cam.heat_stage == "cam_voc12_wr38"
    assert load_config("coco14_r2n").cam.heat_stage is None  # PMM on COCO: one classifier stage
    assert load_config("demo").cam.heat_stage is None


def test_quiet_silences_the_classification_stages_too(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("URN_NO_PROGRESS", raising=False)
    run_pipeline(tiny(demo_root), tmp_path / "loud", until_stage="pseudo_masks", quiet=False)
    loud = capsys.readouterr().err
    assert "cam train" in loud and "cam infer" in loud and "pmm" in loud  # the bars exist ...
    run_pipeline(tiny(demo_root), tmp_path / "quiet", until_stage="pseudo_masks", quiet=True)
    quiet = capsys.readouterr().err
    assert "cam train" not in quiet and "cam infer" not in quiet and "pmm pmm" not in quiet  # --quiet hides them
