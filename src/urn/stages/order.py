"""The names and order of ``urn run``'s stages (a leaf module: the CLI lists them in ``--help``)."""

from __future__ import annotations

import enum

STAGES = (
    "heat_train",
    "heat_maps",
    "cam_train",
    "cams",
    "pseudo_masks",
    "seg1",
    "uncertainty",
    "seg2",
    "evaluate",
    "export",
    "report",
)
#: PMM's stage-1 classifier and its heat maps: run only when ``cam.heat_stage`` names its config.
HEAT_STAGES = ("heat_train", "heat_maps")
CAM_STAGES = (*HEAT_STAGES, "cam_train", "cams", "pseudo_masks")

#: The stages as an enum, for ``--from`` / ``--until`` (click lists the choices and checks them).
Stage = enum.StrEnum("Stage", {name: name for name in STAGES})


class Phase(enum.StrEnum):
    """The segmentation trainings: Seg-1 (config ``train``) and Seg-2 (config ``seg2``)."""

    seg1 = "seg1"
    seg2 = "seg2"
