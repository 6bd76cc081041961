"""Config loading: presets, base chains, dotted overrides, type checks with one-line errors."""

import pytest

from urn.config import Config, config_from_dict, config_to_dict, dump_yaml, list_presets, load_config
from urn.errors import ConfigError


def test_every_preset_loads():
    names = list_presets()
    assert {"voc12_r2n", "voc12_r101", "voc12_wr38", "voc12_s101", "coco14_r2n", "demo"} <= set(names)
    for name in names:
        assert isinstance(load_config(name), Config)


def test_reference_settings_of_voc_and_coco_presets():
    voc = load_config("voc12_r2n")
    assert (voc.train.iters, voc.train.batch_size, voc.train.lr, voc.data.crop_size) == (
        20000,
        16,
        0.005,
        512,
    )
    assert voc.train.pus.enabled and (voc.train.pus.beta, voc.train.pus.k) == (0.5, 0.5)
    assert voc.seg2.weighting == "hard" and not voc.seg2.pus.enabled
    assert voc.uncertainty.exponents == (0.15, 0.2, 0.25, 4.0, 5.0, 6.0)
    coco = load_config("coco14_r2n")
    assert (coco.train.iters, coco.train.batch_size, coco.train.lr, coco.train.min_lr) == (
        40000,
        32,
        0.01,
        5e-5,
    )
    assert (coco.train.pus.beta, coco.train.pus.k) == (0.8, 0.8)
    assert coco.uncertainty.exponents == (0.4, 0.5, 0.6, 2.0, 3.0, 4.0)
    # the base chain: voc12_r101 only swaps the backbone
    r101 = load_config("voc12_r101")
    assert r101.model.backbone.name == "resnet101" and r101.train.iters == 20000


def test_dotted_overrides_are_typed():
    cfg = load_config(
        "voc12_r2n",
        [
            "model.backbone.name=resnet18",
            "train.iters=200",
            "infer.scales=[1.0]",
            "data.fully_supervised=true",
            "train.grad_clip=null",
        ],
    )
    assert cfg.model.backbone.name == "resnet18"
    assert cfg.train.iters == 200
    assert cfg.infer.scales == (1.0,)
    assert cfg.data.fully_supervised is True
    assert cfg.train.grad_clip is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.iter=5", "unknown key 'train.iter' (allowed: iters,"),
        ("train.iters=abc", "'train.iters' must be int, got 'abc'"),
        ("data.layout=foo", "'data.layout' must be one of 'auto', 'voc', 'coco'"),
        ("model.backbone=3", "'model.backbone' is a section"),
        ("nosection.x=1", "unknown key 'nosection'"),
        ("train.amp=1", "'train.amp' must be bool"),
        ("data.base_size=[1,2,3]", "'data.base_size' must be list of 2 values"),
        ("novalue", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_file_with_base_and_bad_key(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("base: voc12_r2n\ntrain:\n  iters: 7\n")
    assert load_config(str(good)).train.iters == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  itres: 7\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'train.itres'"):
        load_config(str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(broken))
    with pytest.raises(ConfigError, match="neither a YAML file nor a preset"):
        load_config("no_such_preset")


def test_yaml_cannot_execute_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(evil))


def test_round_trip_through_plain_dict():
    cfg = load_config("coco14_r2n", ["train.iters=3"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert "iters: 3" in dump_yaml(cfg)


def test_configs_are_frozen_and_with_values_derives_a_checked_copy() -> None:
    import dataclasses

    from urn.config import with_values

    cfg = load_config("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    derived = with_values(cfg, {"train.lr": 0.5, "pmm.method": "threshold"})
    assert (derived.train.lr, derived.pmm.method) == (0.5, "threshold")
    assert (cfg.train.lr, cfg.pmm.method) == (0.02, "pmm")  # the original is untouched
    with pytest.raises(ConfigError, match="--method: unknown key 'pmm.mthod'"):
        with_values(cfg, {"pmm.mthod": "x"}, where="--method")
    with pytest.raises(ConfigError, match="'train.lr' must be a finite number > 0"):
        with_values(cfg, {"train.lr": -1.0})
