"""The key stream: deterministic, resumable, disjoint across ranks."""

import itertools

import pytest

from urn.engine.sampling import KeyBatchSampler, collate_tolerant
from urn.engine.train import poly_lr


def test_resume_reproduces_the_remaining_batches():
    full = list(KeyBatchSampler(10, global_batch=4, total_iters=9, seed=3))
    tail = list(KeyBatchSampler(10, global_batch=4, total_iters=9, start_iter=5, seed=3))
    assert tail == full[5:]


def test_each_epoch_is_a_permutation_and_keys_differ_across_epochs():
    keys = list(itertools.chain.from_iterable(KeyBatchSampler(6, global_batch=3, total_iters=4, seed=0)))
    assert sorted(k % 6 for k in keys[:6]) == list(range(6))
    assert sorted(k % 6 for k in keys[6:12]) == list(range(6))
    assert all(k >= 6 for k in keys[6:12])  # epoch 1 keys seed different augmentations


def test_ranks_split_the_global_batch_without_overlap():
    single = list(KeyBatchSampler(20, global_batch=4, total_iters=5, seed=1))
    r0 = list(KeyBatchSampler(20, global_batch=4, total_iters=5, seed=1, rank=0, world_size=2))
    r1 = list(KeyBatchSampler(20, global_batch=4, total_iters=5, seed=1, rank=1, world_size=2))
    for whole, a, b in zip(single, r0, r1, strict=True):
        assert sorted(a + b) == sorted(whole) and not set(a) & set(b)


def test_bad_batch_split_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        KeyBatchSampler(10, global_batch=3, total_iters=1, world_size=2)


def test_poly_lr_hand_values():
    assert poly_lr(0.01, 0, 100, 0.9, 1e-4) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9, 1e-4) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert poly_lr(0.01, 100, 100, 0.9, 1e-4) == pytest.approx(1e-4)


def test_bad_samples_are_replaced_and_reported():
    import torch

    from urn.engine.sampling import TolerantDataset
    from urn.errors import DataError

    class Half:
        def __len__(self):
            return 4

        def __getitem__(self, key):
            if key % 2:
                raise DataError(f"img{key}.jpg", "unreadable image")
            z = torch.zeros(2, 2)
            return {"image": torch.zeros(3, 2, 2), "target": z, "weight": z, "id": f"img{key}"}

    ds = TolerantDataset(Half())
    batch = collate_tolerant([ds[0], ds[1]])
    assert batch["errors"] == ["img1.jpg: unreadable image"]
    assert batch["id"] == ["img0", "img2"] and batch["image"].shape == (2, 3, 2, 2)
