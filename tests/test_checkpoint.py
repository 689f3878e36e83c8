"""Checkpoints: round trip with RNG states, atomic replacement, clear load errors."""

import random

import numpy as np
import pytest
import torch

from ikem_train.checkpoint import (CheckpointError, load_checkpoint, rng_state, save_checkpoint, seed_everything,
                                   set_rng_state)


def _payload(**extra):
    model = torch.nn.Linear(3, 2)
    return {"model": model.state_dict(), "kind": "pretrain", "epoch": 3, "config": {"optim": {"lr": 0.1}},
            "modalities": ["joint"], **extra}


def test_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    payload = _payload(rng=rng_state(gen))
    save_checkpoint(tmp_path / "a.pt", payload)
    back = load_checkpoint(tmp_path / "a.pt", kind="pretrain")
    assert back["epoch"] == 3 and back["config"] == {"optim": {"lr": 0.1}} and back["modalities"] == ["joint"]
    for key, value in payload["model"].items():
        assert torch.equal(back["model"][key], value)
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_states_restore_every_stream(tmp_path):
    seed_everything(11)
    gen = torch.Generator().manual_seed(3)
    payload = _payload()  # builds a module: consumes torch RNG before the state is taken
    payload["rng"] = rng_state(gen)
    save_checkpoint(tmp_path / "r.pt", payload)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.randperm(10, generator=gen).tolist())
    random.random(), np.random.rand(), torch.rand(1)
    gen2 = torch.Generator()
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], gen2)
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.randperm(10, generator=gen2).tolist())
    assert first == again


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(epoch=1))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _payload(epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ikem checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "lin.pt", {"model": {}, "kind": "linear"})
    with pytest.raises(CheckpointError, match="'linear' checkpoint; this command needs 'pretrain' or 'distill'"):
        load_checkpoint(tmp_path / "lin.pt", kind=("pretrain", "distill"))
    with pytest.raises(CheckpointError, match="kind must be"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}, "kind": "weird"})


class _Payload:
    """Pickles as a call that creates a marker file: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"model": {}, "kind": "pretrain", "config": {}, "extra": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.pt.*open.*can run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_checkpoints_hold_only_safe_types_and_old_numpy_rng_states_still_load(tmp_path):
    seed_everything(5)
    save_checkpoint(tmp_path / "new.pt", _payload(rng=rng_state()))
    torch.load(tmp_path / "new.pt", weights_only=True)  # no allowlist needed for what ikem writes now
    expected = np.random.rand(3)
    # an ikem checkpoint from before: numpy's state as the tuple np.random.get_state() returns
    seed_everything(5)
    old = rng_state()
    old["numpy"] = np.random.get_state()
    torch.save(_payload(rng=old), tmp_path / "old.pt")
    np.random.rand(7)
    set_rng_state(load_checkpoint(tmp_path / "old.pt")["rng"])
    np.testing.assert_array_equal(np.random.rand(3), expected)
    set_rng_state(load_checkpoint(tmp_path / "new.pt")["rng"])
    np.testing.assert_array_equal(np.random.rand(3), expected)
