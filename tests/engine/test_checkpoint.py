"""Checkpoints load with weights_only: plain weights work, pickled code is refused."""

import pickle

import pytest
import torch

from urn.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from urn.errors import UrnError


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/urn_pwned",))


def test_round_trip_and_strict_match(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "iteration": 4})
    other = torch.nn.Linear(3, 2)
    ckpt = load_model_weights(other, tmp_path / "c.pt")
    assert ckpt["iteration"] == 4
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(UrnError, match=r"c.pt: checkpoint does not match the model \(shape of weight"):
        load_model_weights(torch.nn.Linear(4, 2), tmp_path / "c.pt")


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    with pytest.raises(UrnError, match="evil.pt"):
        load_checkpoint(path)
    torch.save({"model": Evil()}, path)
    with pytest.raises(UrnError, match="refused to load"):
        load_checkpoint(path)


def test_missing_and_truncated(tmp_path):
    with pytest.raises(UrnError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(tmp_path / "t.pt", {"model": torch.nn.Linear(30, 30).state_dict()})
    data = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UrnError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "t.pt")
