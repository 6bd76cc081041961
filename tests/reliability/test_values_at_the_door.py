"""Every value checked at the door (issue 17): config ranges, the requested device and the launcher
variables are refused with one line before any work starts or anything is written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from tests.reliability.conftest import assert_user_error


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("train.iters=0", ("'train.iters' must be an integer >= 1", "got 0")),
        ("seg2.iters=-5", ("'seg2.iters' must be an integer >= 1", "got -5")),
        ("cam.batch_size=0", ("'cam.batch_size' must be an integer >= 1",)),
        ("data.crop_size=4", ("'data.crop_size' must be an integer >= 8",)),
        ("infer.crop_size=0", ("'infer.crop_size' must be an integer >= 8",)),
        ("infer.scales=[1.0,0]", ("'infer.scales' must be a list of values, each a finite number > 0", "[1.0, 0.0]")),
        ("infer.scales=[]", ("'infer.scales' must be a non-empty list",)),
        ("cam.scales=[1.0,.inf]", ("'cam.scales'", "[1.0, inf]")),
        ("model.backbone.output_stride=12", ("'model.backbone.output_stride' must be one of 8, 16, 32", "got 12")),
        ("data.num_workers=-1", ("'data.num_workers' must be an integer >= 0",)),
        ("train.log_every=0", ("'train.log_every' must be an integer >= 1",)),
        ("cam.ckpt_every=0", ("'cam.ckpt_every' must be an integer >= 1",)),
        ("train.val_every=-1", ("'train.val_every' must be an integer >= 0",)),
        ("train.lr=.nan", ("'train.lr' must be a finite number > 0, got nan",)),
        ("seg2.lr=.inf", ("'seg2.lr' must be a finite number > 0, got inf",)),
        ("cam.lr=0", ("'cam.lr' must be a finite number > 0, got 0.0",)),
        ("train.lr=-0.01", ("'train.lr' must be a finite number > 0, got -0.01",)),
        ("uncertainty.exponents=[0.2,-1]", ("'uncertainty.exponents'", "each a finite number > 0")),
        ("uncertainty.exponents=[0.2,.nan]", ("'uncertainty.exponents'", "[0.2, nan]")),
        ("data.ratio_range=[2.0,0.5]", ("'data.ratio_range' must be [lo, hi] with lo <= hi", "[2.0, 0.5]")),
        ("data.ratio_range=[0,2.0]", ("'data.ratio_range'", "each a finite number > 0")),
        ("data.base_size=[0,512]", ("'data.base_size'", "each an integer >= 1")),
        ("infer.base_size=[2048,-1]", ("'infer.base_size'",)),
        ("pmm.bg_power=-3", ("'pmm.bg_power' must be a finite number > 0",)),
        ("crf.bilateral_compat=.nan", ("'crf.bilateral_compat'", "got nan")),
        ("model.aux_weight=-.inf", ("'model.aux_weight'", "got -inf")),
        ("train.pus.beta=.nan", ("'train.pus.beta' must be a finite number, got nan",)),
        ("cam.resize_long=[768,448]", ("'cam.resize_long' must be [lo, hi] with lo <= hi",)),
    ],
)
def test_config_value_out_of_range_from_the_command_line(cli, override, fragments):
    assert_user_error(cli("show-config", "demo", override), "command line: ", *fragments)


def test_config_value_out_of_range_in_a_yaml_file_names_the_file(cli, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("base: demo\ntrain:\n  lr: .nan\n")
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("base: ../base.yaml\ntrain:\n  iters: 5\n")
    line = assert_user_error(cli("show-config", child), "'train.lr' must be a finite number > 0, got nan")
    assert line.startswith("error: ") and f"{base.name}: 'train.lr'" in line and "child.yaml" not in line, line


def test_a_good_value_on_the_command_line_overrides_a_bad_one_in_the_file(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: demo\ntrain:\n  lr: .inf\n")
    result = cli("show-config", cfg, "train.lr=0.01")
    assert result.code == 0, result.text


def test_boundary_values_are_accepted(cli):
    result = cli(
        "show-config",
        "demo",
        "train.iters=1",
        "train.val_every=0",
        "data.num_workers=0",
        "data.crop_size=8",
        "data.ratio_range=[1.0,1.0]",
        "pmm.bg_power=auto",
        "train.grad_clip=null",
    )
    assert result.code == 0, result.text


def test_every_preset_passes_the_range_checks(cli):
    from urn.config import list_presets

    for name in list_presets():
        result = cli("show-config", name)
        assert result.code == 0, (name, result.text)


def test_bad_value_stops_training_before_anything_is_written(cli, demo_copy, tmp_path):
    out = tmp_path / "run"
    assert_user_error(
        cli("train", "demo", f"data.root={demo_copy}", "train.iters=0", "--out", out, "--quiet", "--device", "cpu"),
        "'train.iters' must be an integer >= 1",
    )
    assert not out.exists()


# ------------------------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_an_error_not_a_cpu_run(cli, demo_copy, tmp_path):
    out = tmp_path / "run"
    result = cli(
        "train", "demo", f"data.root={demo_copy}", "train.iters=1", "--out", out, "--quiet", "--device", "cuda"
    )
    assert_user_error(result, "--device cuda: CUDA is not available", "--device cpu")
    assert not (out / "last.pt").exists()


def test_unknown_device_is_an_error(cli, demo_copy, tmp_path):
    result = cli(
        "eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "x.pt", "--quiet", "--device", "tpu"
    )
    assert_user_error(result, "--device must be cpu, cuda or cuda:N, got 'tpu'")


# ------------------------------------------------------------------------ launcher variables, no launcher
def _urn(args: list[str], env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update({"OMP_NUM_THREADS": "1", "URN_NO_PROGRESS": "1", **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "urn", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def _assert_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_slurm_ntasks_without_srun_stops_eval_instead_of_waiting(demo_copy, tmp_path):
    out = tmp_path / "eval"
    proc = _urn(
        ["eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "x.pt", "--out", out, "--quiet"],
        {"SLURM_NTASKS": "2"},
        timeout=60,
    )
    _assert_one_line(proc, "SLURM_NTASKS=2", "SLURM_PROCID is not set", "srun")
    assert not out.exists()


def test_slurm_ntasks_without_srun_stops_pmm_before_any_mask(demo_copy, tmp_path):
    out = tmp_path / "masks"
    (tmp_path / "cams").mkdir()
    proc = _urn(
        ["pmm", "demo", f"data.root={demo_copy}", "--cams", tmp_path / "cams", "--out", out],
        {"SLURM_NTASKS": "2"},
        timeout=60,
    )
    _assert_one_line(proc, "SLURM_NTASKS=2", "SLURM_PROCID")
    assert not out.exists() or not any(out.iterdir())


def test_world_size_without_rank_stops_eval(demo_copy, tmp_path):
    proc = _urn(
        ["eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "x.pt", "--quiet"],
        {"WORLD_SIZE": "2"},
        timeout=60,
    )
    _assert_one_line(proc, "WORLD_SIZE=2", "RANK is not set", "torchrun")


def test_world_size_and_rank_without_master_addr_stops_eval(demo_copy, tmp_path):
    proc = _urn(
        ["eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "x.pt", "--quiet"],
        {"WORLD_SIZE": "2", "RANK": "0"},
        timeout=60,
    )
    _assert_one_line(proc, "WORLD_SIZE=2", "MASTER_ADDR is not set")


def test_non_integer_launcher_variable(demo_copy, tmp_path):
    proc = _urn(
        ["eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "x.pt", "--quiet"],
        {"SLURM_NTASKS": "two"},
        timeout=60,
    )
    _assert_one_line(proc, "SLURM_NTASKS='two' must be an integer")


def test_one_task_slurm_step_inside_a_bigger_allocation_runs_as_one_process():
    from urn.engine.distributed import launch_env

    mp = pytest.MonkeyPatch()
    try:
        for name in ("WORLD_SIZE", "RANK"):
            mp.delenv(name, raising=False)
        mp.setenv("SLURM_NTASKS", "4")
        mp.setenv("SLURM_STEP_NUM_TASKS", "1")
        mp.setenv("SLURM_PROCID", "0")
        assert launch_env(group=True) == (0, 1, 0)
    finally:
        mp.undo()
