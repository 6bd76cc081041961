"""The tiny-model overrides the CLI and engine tests share: one place to say what "tiny" means."""

from __future__ import annotations


def tiny_segmentor(backbone: str = "resnet18", head_channels: int = 16) -> list[str]:
    """Overrides for a segmentor without weights on 64x48 images with 32-pixel crops, no loader workers."""
    return [
        f"model.backbone.name={backbone}",
        "model.backbone.weights=null",
        f"model.head_channels={head_channels}",
        "model.aux_channels=8",
        "data.crop_size=32",
        "data.base_size=[64, 48]",
        "data.num_workers=0",
    ]


def tiny_classifier(backbone: str = "mobilenetv3_small_050") -> list[str]:
    """Overrides for a CAM classifier without weights at stride 16 on 48-pixel crops, no loader workers."""
    return [
        f"cam.backbone.name={backbone}",
        "cam.backbone.weights=null",
        "cam.backbone.output_stride=16",
        "cam.batch_size=2",
        "cam.crop_size=48",
        "cam.resize_long=[48,64]",
        "cam.num_workers=0",
    ]
