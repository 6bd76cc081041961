"""urn: weakly-supervised semantic segmentation from image-level labels (PMM + URN, AAAI 2022)."""

__version__ = "0.1.0"
