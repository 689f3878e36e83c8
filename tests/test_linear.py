"""Linear evaluation on a real (tiny) pretrained checkpoint, strict loading, and late fusion."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from ikem_train.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from ikem_train.config import load_config
from ikem_train.data.datasets import PretrainDataset, write_synthetic_store
from ikem_train.eval.fuse import FuseError, fuse_runs
from ikem_train.eval.features import EvaluationError
from ikem_train.jobs import linear
from ikem_train.training.loop import prepare_run_dir, train
from ikem_train.methods.model import PretrainModel, encoder_state_dicts

MODS = ["joint", "bone"]
SETTINGS = ["data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0", "model.queue_size=8",
            "optim.epochs=1", "run.device=cpu", "run.progress=false", "run.save_interval=1",
            "linear.epochs=6", "linear.milestones=[4]", "linear.eval_interval=3", "linear.batch_size=8"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A two-modality PretrainModel trained one epoch through the real loop."""
    root = tmp_path_factory.mktemp("linear")
    store = write_synthetic_store(root / "s.zarr", n_train=16, n_val=8, frames=20, persons=1)
    cfg = load_config(None, SETTINGS + [f"model.modalities=[{','.join(MODS)}]"])
    seed_everything(0)
    model = PretrainModel(**asdict(cfg.model))
    run = prepare_run_dir(root / "pre", False)
    train(model, PretrainDataset(store, "ntu60-xsub"), cfg, run, kind="pretrain", modalities=MODS,
          log=lambda *a: None)
    return store, run / "last.pt"


def test_linear_fits_frozen_encoders_and_saves_fusable_scores(pretrained, tmp_path):
    store, checkpoint = pretrained
    before = encoder_state_dicts(load_checkpoint(checkpoint)["model"], MODS)
    res = linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint, overrides=SETTINGS,
                 log=lambda *a: None)
    assert res["modalities"] == MODS and res["fused"] and res["encoder_unchanged"]
    assert res["final"]["epoch"] == 6 and "validation split" in res["best_on_val"]["note"]
    assert res["train_samples"] == 16 and res["val_samples"] == 8
    # the checkpoint on disk is untouched, and the fused scores are the mean of the per-modality logits
    after = encoder_state_dicts(load_checkpoint(checkpoint)["model"], MODS)
    assert all(torch.equal(before[m][k], after[m][k]) for m in MODS for k in before[m])
    scores = np.load(tmp_path / "lin" / "scores.npz")
    assert scores["fused"].shape == (8, 4)
    np.testing.assert_allclose(scores["fused"], (scores["logits/joint"] + scores["logits/bone"]) / 2, rtol=1e-6)
    top1 = (scores["fused"].argmax(1) == scores["label"]).mean()
    assert top1 == pytest.approx(res["final"]["top1"])


def test_linear_refuses_a_checkpoint_with_missing_encoder_keys(pretrained, tmp_path):
    store, checkpoint = pretrained
    ck = load_checkpoint(checkpoint)
    dropped = "query.bone.backbone.data_bn.weight"
    assert dropped in ck["model"]
    del ck["model"][dropped]
    broken = save_checkpoint(tmp_path / "broken.pt", ck)
    with pytest.raises(EvaluationError, match="data_bn.weight"):
        linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=broken, overrides=SETTINGS, log=lambda *a: None)
    assert not (tmp_path / "lin").exists()  # refused before anything is written


def test_linear_refuses_a_modality_the_checkpoint_lacks(pretrained, tmp_path):
    store, checkpoint = pretrained
    with pytest.raises(EvaluationError, match="acceleration.*joint, bone"):
        linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint, modalities=["acceleration"],
               overrides=SETTINGS, log=lambda *a: None)


def _scores(run, fused, label, names):
    run.mkdir()
    np.savez(run / "scores.npz", fused=np.asarray(fused, dtype=np.float32), label=np.asarray(label),
             name=np.asarray(names))


def test_fuse_weights_the_saved_scores(tmp_path):
    names, label = ["a", "b", "c"], [0, 1, 1]
    # run a is right on samples a, b; run b on a, c; 1.0*a + 3.0*b follows b where they disagree
    _scores(tmp_path / "a", [[2, 0], [0, 1], [1, 0]], label, names)
    _scores(tmp_path / "b", [[1, 0], [1, 0], [0, 1]], label, names)
    res = fuse_runs([(tmp_path / "a", 1.0), (tmp_path / "b", 3.0)])
    assert [r["top1"] for r in res["rows"]] == pytest.approx([2 / 3, 2 / 3])
    np.testing.assert_allclose(res["scores"], [[5, 0], [3, 1], [1, 3]])
    assert res["fused"]["top1"] == pytest.approx(2 / 3)
    _scores(tmp_path / "c", [[1, 0], [1, 0], [0, 1]], label, ["a", "b", "x"])
    with pytest.raises(FuseError, match="different val samples"):
        fuse_runs([(tmp_path / "a", 1.0), (tmp_path / "c", 1.0)])


def test_fuse_names_a_folder_that_is_not_an_evaluation_and_a_way_that_works(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("linear: {}\n")
    with pytest.raises(FuseError, match=r"half is not a finished linear evaluation; run .*--run-dir NEW_FOLDER"):
        fuse_runs([(tmp_path / "half", 1.0)])


@pytest.mark.parametrize("fused, label, message", [
    ([[1.0, np.nan], [0.0, 1.0]], [0, 1], r"NaN or inf logits for 1 of 2 samples.*lower linear.lr"),
    ([[1.0, np.inf], [0.0, 1.0]], [0, 1], r"NaN or inf logits for 1 of 2 samples"),
    ([1.0, 0.0], [0, 1], r"fused must be \(n, C\) float logits, got float32 of shape \(2,\)"),
    ([[1.0, 0.0], [0.0, 1.0]], [0.5, 1.0], r"label must be \(2,\) integers, got float64"),
    ([[1.0, 0.0], [0.0, 1.0]], [0, 1, 1], r"label must be \(2,\) integers"),
])
def test_fuse_refuses_scores_that_linear_evaluation_does_not_write(tmp_path, fused, label, message):
    _scores(tmp_path / "a", fused, label, ["a", "b", "c"][:len(label)])
    with pytest.raises(FuseError, match=message):
        fuse_runs([(tmp_path / "a", 1.0)])
