"""Segmentation losses: per-pixel CE with ignore, PMM's PUS, URN's uncertainty weighting.

The order follows the reference's ``cross_entropy`` (URN_ALGORITHM.md 2.5, 4.1), per head:

1. ``l`` = cross-entropy per pixel, 0 where the target is 255;
2. ``l *= w`` with the uncertainty weight (Seg-2), if weighting is on;
3. PUS: if the batch mean ``m`` of ``l`` is below ``beta``, transform ``l`` (clamp / pow / ignore);
4. mean over valid pixels (or over all pixels, the reference's quirk Q9).

The total is ``main + aux_weight * aux``. Nothing here synchronises with the GPU except the
logged values, which are read together once per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urn.config import PUSConfig, TrainConfig
from urn.errors import UrnError
from urn.io import IGNORE_INDEX

_POW_EPS = 1e-9  # the reference adds it before the power so that l = 0 has a finite gradient


def pixel_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Cross-entropy of every pixel.

    Args:
        logits: ``(N, C, H, W)`` scores.
        target: ``(N, H, W)`` int64 class indices; ``ignore_index`` marks pixels without a label.

    Returns:
        ``(N, H, W)`` float losses, exactly 0 at ignored pixels.
    """
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")


def _mean(per_pixel: Tensor, valid: Tensor, valid_mean: bool) -> Tensor:
    """Mean over valid pixels (at least one counted), or over all ``N*H*W`` entries."""
    if not valid_mean:
        return per_pixel.mean()
    return per_pixel.sum() / valid.sum().clamp(min=1)


def pus_transform(per_pixel: Tensor, valid_mask: Tensor, cfg: PUSConfig, valid_mean: bool) -> tuple[Tensor, Tensor]:
    """Pretended Under-fitting Strategy: once the batch fits well, stop pushing the hardest pixels.

    With ``m`` the mean of ``per_pixel`` (over valid pixels if ``valid_mean``, else over all
    ``N*H*W`` entries as the reference does), and only if ``m < cfg.beta``:

    - ``clamp``: ``l <- min(l, k)`` (pixels above ``k`` get no gradient this step);
    - ``pow``: ``l <- (l + 1e-9) ** k``;
    - ``ignore``: ``l <- l * [l <= k]``.

    Ignored pixels stay exactly 0 (the reference's ``pow`` gives them ``1e-9 ** k``, no gradient).
    ``cfg.enabled`` is not consulted: the caller decides whether PUS runs.

    Args:
        per_pixel: ``(N, H, W)`` non-negative losses.
        valid_mask: ``(N, H, W)`` bool, True where the pixel has a label.
        cfg: type, ``beta`` (trigger) and ``k``.
        valid_mean: how ``m`` is averaged.

    Returns:
        ``(losses (N, H, W), triggered)``; ``triggered`` is a 0-d bool tensor (no host sync).
    """
    m = _mean(per_pixel.detach(), valid_mask, valid_mean)
    triggered = m < cfg.beta
    if cfg.type == "clamp":
        changed = per_pixel.clamp(max=cfg.k)
    elif cfg.type == "pow":
        changed = (per_pixel + _POW_EPS).pow(cfg.k) * valid_mask
    elif cfg.type == "ignore":
        changed = per_pixel * (per_pixel <= cfg.k)
    else:
        raise UrnError(f"train.pus.type: unknown {cfg.type!r} (choose from clamp, pow, ignore)")
    return torch.where(triggered, changed, per_pixel), triggered


def uncertainty_weights(weight: Tensor, mode: str, thresh: float = 0.05) -> Tensor:
    """Per-pixel loss weights from the Seg-2 weight map (1 = certain, 0 = most uncertain).

    Args:
        weight: ``(N, H, W)`` in [0, 1] (the reference's weight byte / 255, i.e. ``1 - U~``).
        mode: ``none`` (all 1), ``hard`` (the reference: ``thresh`` where ``weight <= thresh``, else 1;
            in practice only each image's most uncertain pixels are down-weighted), or ``soft``
            (the weight itself).
        thresh: the hard threshold, which is also the low weight (0.05 in the reference).

    Returns:
        ``(N, H, W)`` float weights.
    """
    if mode == "none":
        return torch.ones_like(weight)
    if mode == "hard":
        return torch.where(weight <= thresh, torch.full_like(weight, thresh), torch.ones_like(weight))
    if mode == "soft":
        return weight.clamp(0.0, 1.0)
    raise UrnError(f"train.weighting: unknown {mode!r} (choose from none, hard, soft)")


def balance_per_class(weights: Tensor, target: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Rescale weights so that each class keeps the total weight it has without weighting.

    The hard rule mutes the pixels each image is least sure of; for thin or small objects that is most of
    the object (the demo's rings and crosses: 40-50% of their pixels against 10% of the background), so
    the muting also shifts the class balance towards the background. Here the pixels of class ``c`` in
    the batch share the weight ``n_c`` in proportion to their uncertainty weights: inside a class, noisy
    pixels still count ``thresh`` times less than certain ones, but no class loses weight to another.

    Args:
        weights: ``(N, H, W)`` per-pixel weights (> 0 where valid).
        target: ``(N, H, W)`` int64 labels.
        valid: ``(N, H, W)`` bool, labelled pixels.
        num_classes: the number of classes (labels are ``0 .. num_classes - 1`` where valid).

    Returns:
        ``(N, H, W)`` weights with ``sum(w[target == c]) == count(target == c)`` for every class present.
    """
    bins = torch.where(valid, target, torch.full_like(target, num_classes)).flatten()
    counts = torch.bincount(bins, minlength=num_classes + 1).to(weights.dtype)
    sums = torch.bincount(bins, weights=weights.flatten(), minlength=num_classes + 1)
    scale = counts / sums.clamp(min=torch.finfo(weights.dtype).tiny)
    scale[num_classes] = 1.0  # unlabelled pixels have loss 0 anyway
    return weights * scale[bins].view_as(weights)


class SegmentationLoss(nn.Module):
    """Main + auxiliary per-pixel CE with optional uncertainty weighting and PUS.

    Args:
        aux_weight: weight of the ``"aux"`` output's loss (0.4 in the reference).
        pus: PUS settings; PUS runs when ``pus.enabled``, on every head (as in the reference).
        weighting: ``none``, ``hard`` or ``soft`` (see :func:`uncertainty_weights`).
        weight_thresh: the hard weighting threshold.
        weight_balance: ``class`` rescales the weights per class (:func:`balance_per_class`).
        valid_mean: divide by the number of labelled pixels; False divides by all pixels, like
            the reference (which lowers the loss, and so triggers PUS earlier, on padded crops).
        ignore_index: the label of unlabelled pixels.
    """

    def __init__(
        self,
        *,
        aux_weight: float = 0.4,
        pus: PUSConfig | None = None,
        weighting: str = "none",
        weight_thresh: float = 0.05,
        weight_balance: str = "none",
        valid_mean: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if weighting not in ("none", "hard", "soft"):
            raise UrnError(f"train.weighting: unknown {weighting!r} (choose from none, hard, soft)")
        self.aux_weight = aux_weight
        self.pus = pus if pus is not None else PUSConfig()
        self.weighting = weighting
        self.weight_thresh = weight_thresh
        if weight_balance not in ("none", "class"):
            raise UrnError(f"train.weight_balance: unknown {weight_balance!r} (choose from none, class)")
        self.weight_balance = weight_balance
        self.valid_mean = valid_mean
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, cfg: TrainConfig, aux_weight: float = 0.4) -> SegmentationLoss:
        """The loss a training phase's config describes (``aux_weight`` is ``model.aux_weight``)."""
        keys = ("pus", "weighting", "weight_thresh", "weight_balance", "valid_mean")
        return cls(aux_weight=aux_weight, **{key: getattr(cfg, key) for key in keys})

    def head_loss(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One head's scalar loss and, with PUS on, whether it triggered (0-d bool tensor)."""
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")
        valid = target != self.ignore_index
        per_pixel = pixel_cross_entropy(logits, target, self.ignore_index)
        if self.weighting != "none":
            if weight is None:
                raise UrnError(f"train.weighting={self.weighting} needs per-pixel weights (set data.uncertainty)")
            w = uncertainty_weights(weight, self.weighting, self.weight_thresh)
            if self.weight_balance == "class":
                w = balance_per_class(w, target, valid, logits.shape[1])
            per_pixel = per_pixel * w
        triggered = None
        if self.pus.enabled:
            per_pixel, triggered = pus_transform(per_pixel, valid, self.pus, self.valid_mean)
        return _mean(per_pixel, valid, self.valid_mean), triggered

    def terms(
        self, outputs: dict[str, Tensor], target: Tensor, weight: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its parts as 0-d tensors (no host sync): ``loss_out``, ``loss_aux`` (if present)
        and, with PUS on, ``pus_out`` / ``pus_aux`` (1.0 = triggered). Arguments as :meth:`forward`."""
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        for key, scale in (("out", 1.0), ("aux", self.aux_weight)):
            if key not in outputs:
                continue
            loss, triggered = self.head_loss(outputs[key], target, weight)
            total = scale * loss if total is None else total + scale * loss
            parts[f"loss_{key}"] = loss.detach().float()
            if triggered is not None:
                parts[f"pus_{key}"] = triggered.float()
        if total is None:
            raise ValueError(f"outputs has neither 'out' nor 'aux' (keys: {sorted(outputs)})")
        return total, parts

    def forward(
        self, outputs: dict[str, Tensor], target: Tensor, weight: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its logged parts.

        Args:
            outputs: the segmentor's dict: ``"out"`` and optionally ``"aux"``, each ``(N, C, H, W)``
                at label size.
            target: ``(N, H, W)`` int64 labels, 255 = ignore.
            weight: ``(N, H, W)`` per-pixel weights in [0, 1]; used only when weighting is on.

        Returns:
            ``(loss, parts)``: the scalar to back-propagate and floats ``loss``, ``loss_out``,
            ``loss_aux`` (if present) and, with PUS on, ``pus_out`` / ``pus_aux`` (1.0 = triggered).
        """
        total, parts = self.terms(outputs, target, weight)
        logged = torch.stack([total.detach().float(), *parts.values()]).tolist()  # one host sync for all
        return total, dict(zip(["loss", *parts], logged, strict=True))
