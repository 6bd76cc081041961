"""Multi-scale + flip inference of models whose output is known."""

import numpy as np
import pytest
import torch

from urn.config import InferConfig
from urn.engine.inference import predict_probs, rescale_size, slide_logits


class LeftRight(torch.nn.Module):
    """Logits: class 1 on the left half of the input, class 0 on the right (not flip-invariant)."""

    def forward(self, x):
        n, _, h, w = x.shape
        out = torch.zeros(n, 2, h, w)
        out[:, 1, :, : w // 2] = 10.0
        out[:, 0, :, w // 2 :] = 10.0
        return {"out": out}


class Constant(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, x):
        n, _, h, w = x.shape
        return {"out": self.logits.view(1, -1, 1, 1).expand(n, -1, h, w).clone()}


def test_rescale_size_follows_mmcv_keep_ratio():
    # VOC 500x375 at ratio 1.0 of (2048, 512): short side -> 512 (spec 8 table: 683x512)
    assert rescale_size(375, 500, (2048, 512), 1.0) == (512, 683)
    assert rescale_size(375, 500, (2048, 512), 0.5) == (256, 341)
    assert rescale_size(375, 500, (2048, 512), 1.75) == (896, 1195)


def test_constant_model_gives_its_softmax_at_every_scale():
    image = np.zeros((30, 40, 3), np.uint8)
    cfg = InferConfig(mode="whole", base_size=(40, 30), scales=(0.5, 1.0, 1.5), flip=True)
    probs = predict_probs(Constant([0.0, 1.0, 2.0]), image, cfg, torch.device("cpu"))
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).numpy()
    assert probs.shape == (3, 30, 40)
    np.testing.assert_allclose(probs[:, 5, 7], expected, rtol=1e-5)


def test_flip_views_are_flipped_back_before_averaging():
    image = np.zeros((8, 8, 3), np.uint8)
    model = LeftRight()
    no_flip = predict_probs(
        model,
        image,
        InferConfig(mode="whole", base_size=(8, 8), scales=(1.0,), flip=False),
        torch.device("cpu"),
    )
    assert no_flip[1, :, :4].min() > 0.99 and no_flip[0, :, 4:].min() > 0.99
    flip = predict_probs(
        model,
        image,
        InferConfig(mode="whole", base_size=(8, 8), scales=(1.0,), flip=True),
        torch.device("cpu"),
    )
    # the flipped view says the opposite and is flipped back: the average is 0.5 everywhere
    np.testing.assert_allclose(flip, 0.5, atol=1e-4)


def test_slide_windows_cover_the_image_and_average_overlaps():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return {"out": torch.ones(x.shape[0], 2, *x.shape[-2:])}

    logits = slide_logits(Recorder(), torch.zeros(1, 3, 20, 30), crop=16, stride=12)
    # n_h = (20 - 16 + 11) // 12 + 1 = 2; n_w = (30 - 16 + 11) // 12 + 1 = 3
    assert len(seen) == 6 and all(s == (16, 16) for s in seen)
    assert torch.allclose(logits, torch.ones_like(logits))


def test_small_image_is_run_whole_in_slide_mode():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return {"out": torch.zeros(x.shape[0], 2, *x.shape[-2:])}

    slide_logits(Recorder(), torch.zeros(1, 3, 10, 12), crop=16, stride=12)
    assert seen == [(10, 12)]


@pytest.mark.parametrize("n", [1, 2])
def test_probabilities_sum_to_one(n):
    image = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    cfg = InferConfig(mode="slide", crop_size=8, stride=6, base_size=(16, 12), scales=(1.0, 1.25)[:n], flip=True)
    probs = predict_probs(Constant([0.3, -1.0]), image, cfg, torch.device("cpu"))
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
