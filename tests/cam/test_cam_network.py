"""CAM networks, parameter groups, BN freezing and the SEAM losses."""

from __future__ import annotations

import pytest
import torch

from urn.cam.network import CAMNet, SEAMNet, build_cam_net
from urn.cam.seam_losses import adaptive_min_pool_loss, max_norm, max_onehot, seam_loss
from urn.config import BackboneConfig, CAMConfig


def _cfg(network: str, **kw: object) -> CAMConfig:
    return CAMConfig(backbone=BackboneConfig(name="resnet18", output_stride=16), network=network, **kw)


@pytest.mark.parametrize("network", ["plain", "seam"])
def test_shapes_and_logits_are_gap_of_cams(network: str) -> None:
    torch.manual_seed(0)
    net = build_cam_net(_cfg(network), 6).eval()
    x = torch.randn(2, 3, 64, 48)
    logits = net(x)
    assert logits.shape == (2, 5)
    cam = net.cam(x)
    assert cam.shape == (2, 5, 4, 3)
    if network == "plain":
        torch.testing.assert_close(logits, cam.mean(dim=(2, 3)))
    else:
        out = net(x, seam=True)
        assert out.cam.shape == out.cam_rv.shape == (2, 6, 4, 3)
        torch.testing.assert_close(logits, out.cam[:, 1:].mean(dim=(2, 3)))
        assert (out.cam_rv >= 0).all()  # refined CAM: non-negative seeds times non-negative affinity


def test_param_groups_freezing_and_bn_mode() -> None:
    net = build_cam_net(_cfg("seam", freeze_bn=True, freeze_stem=True), 6)
    groups = net.param_groups(lr=0.02, weight_decay=5e-4, head_lr_mult=10.0)
    # resnet18 convs and the SEAM head have no biases and BN is frozen: weights only, x1 and x10
    assert [g["lr"] for g in groups] == pytest.approx([0.02, 0.2])
    head = {id(p) for m in net.head_modules() for p in m.parameters()}
    grouped = {id(p) for g in groups for p in g["params"]}
    assert head <= grouped
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert not net.backbone.model.conv1.weight.requires_grad  # stem frozen
    bn = net.backbone.model.layer3[0].bn1
    assert not bn.weight.requires_grad
    net.train()
    assert not bn.training and net.fc8.training  # frozen BN stays in eval mode through train()
    net.eval()
    assert not net.fc8.training
    assert [g["weight_decay"] for g in groups] == [5e-4, 5e-4]


def test_plain_param_groups_multipliers() -> None:
    net = build_cam_net(_cfg("plain"), 6)
    groups = net.param_groups(lr=0.01, weight_decay=1e-4, head_lr_mult=10.0)
    # backbone weights, backbone biases + norms, head weights (the classifier has no bias)
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.02, 0.1])
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0, 1e-4]
    assert isinstance(net, CAMNet) and not isinstance(net, SEAMNet)


def test_max_norm_and_onehot() -> None:
    p = torch.tensor([[[[-1.0, 0.0, 2.0, 4.0]]]])
    torch.testing.assert_close(
        max_norm(p), torch.tensor([[[[0.0, 0.0, (2 - 1e-5) / (4 + 1e-5), (4 - 1e-5) / (4 + 1e-5)]]]])
    )
    x = torch.tensor([[[[0.5, 0.5]], [[0.2, 0.9]], [[0.7, 0.1]]]])  # (1, 3, 1, 2): bg, fg1, fg2
    torch.testing.assert_close(max_onehot(x), torch.tensor([[[[0.5, 0.5]], [[0.0, 0.9]], [[0.7, 0.0]]]]))


def test_adaptive_min_pool_hand_computed() -> None:
    # per-pixel max over channels: [3, -1, 2, 0.5] -> k = 4 // 4 = 1 smallest -> relu(-1) = 0
    x = torch.tensor([[[[3.0, -1.0], [2.0, 0.5]], [[1.0, -2.0], [0.0, 0.1]]]])
    assert adaptive_min_pool_loss(x).item() == 0.0
    # all positive: the smallest of [4, 5, 6, 7] is 4 -> 4 / (1 * 1)
    y = torch.tensor([[[[4.0, 5.0], [6.0, 7.0]]]])
    assert adaptive_min_pool_loss(y).item() == pytest.approx(4.0)


def test_seam_loss_backward() -> None:
    torch.manual_seed(0)
    net = build_cam_net(_cfg("seam"), 6).train()
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    loss, parts = seam_loss(net, x, labels, scale=0.3)
    assert torch.isfinite(loss) and set(parts) == {"cls", "er", "ecr"}
    loss.backward()
    assert net.fc8.weight.grad is not None and net.f9.weight.grad is not None
    assert net.f8_3.weight.grad.abs().sum() > 0
