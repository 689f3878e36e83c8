"""``model.graph_partition`` through configs, checkpoints, distillation and linear evaluation.

The adjacency is a non-persistent buffer, so a state dict loads into either graph without
complaint: only the recorded config can say which one the weights were trained with
(METHOD.md §5, §11 item 20).
"""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ikem_cli.train import main as ikem_train
from ikem_train.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from ikem_train.config import ConfigError, config_to_dict, load_config
from ikem_train.data.datasets import write_synthetic_store
from ikem_train.nets.graph import spatial_adjacency
from ikem_train.eval.features import load_encoders
from ikem_train.methods.model import DistillModel, PretrainModel
from ikem_train.nets.stgcn import STGCN

SMALL = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=8",
         "distill.student_dim=48", "distill.queue_size=8", "data.batch_size=4", "data.num_workers=0",
         "optim.epochs=1", "run.progress=false", "linear.epochs=2", "linear.eval_interval=1"]
OTHER = {"reference": "full", "full": "reference"}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save_pretrained(path, partition, *, legacy=False):
    """A one-modality PretrainModel saved as the training loop saves it; ``legacy`` drops the key."""
    cfg = load_config(None, SMALL + ["model.modalities=[joint]", f"model.graph_partition={partition}"])
    seed_everything(0)
    model = PretrainModel(**asdict(cfg.model))
    config = config_to_dict(cfg)
    if legacy:
        del config["model"]["graph_partition"]
    save_checkpoint(path, {"model": model.state_dict(), "kind": "pretrain", "modalities": ["joint"],
                           "config": config})
    return model.query["joint"].backbone.eval()


def _x():
    return torch.randn(3, 3, 20, 25, 2, generator=torch.Generator().manual_seed(1))


def test_the_default_is_the_reference_graph_and_unknown_names_are_refused():
    assert load_config(None).model.graph_partition == "reference"
    assert load_config(CONFIGS / "ntu60-xsub" / "ikem-teacher.yaml").model.graph_partition == "reference"
    assert load_config(None, ["model.graph_partition=full"]).model.graph_partition == "full"
    with pytest.raises(ConfigError, match="model.graph_partition.*valid: reference, full"):
        load_config(None, ["model.graph_partition=spatial"])
    model = PretrainModel("joint", hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=8)
    for encoder in (*model.query.values(), *model.key.values()):
        np.testing.assert_array_equal(encoder.backbone.adjacency.numpy(), spatial_adjacency("reference"))


@pytest.mark.parametrize("partition", ["reference", "full"])
def test_a_checkpoint_evaluates_with_the_graph_it_was_trained_with(tmp_path, partition):
    trained = _save_pretrained(tmp_path / "p.pt", partition)
    ck = load_checkpoint(tmp_path / "p.pt")
    assert ck["config"]["model"]["graph_partition"] == partition
    encoder = load_encoders(ck, ["joint"])["joint"]
    np.testing.assert_array_equal(encoder.adjacency.numpy(), spatial_adjacency(partition))
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), trained(x), rtol=0, atol=0)
        # the same weights on the other graph load silently but compute other features
        other = STGCN(hidden_channels=4, hidden_dim=16, graph_partition=OTHER[partition]).eval()
        other.load_state_dict(trained.state_dict())
        assert (other(x) - trained(x)).abs().max() > 1e-3 * trained(x).abs().max()


def test_a_checkpoint_without_the_key_loads_as_full(tmp_path):
    trained = _save_pretrained(tmp_path / "old.pt", "full", legacy=True)
    assert "graph_partition" not in torch.load(tmp_path / "old.pt", weights_only=True)["config"]["model"]
    ck = load_checkpoint(tmp_path / "old.pt")
    assert ck["config"]["model"]["graph_partition"] == "full"
    encoder = load_encoders(ck, ["joint"])["joint"]
    np.testing.assert_array_equal(encoder.adjacency.numpy(), spatial_adjacency("full"))
    with torch.no_grad():
        torch.testing.assert_close(encoder(_x()), trained(_x()), rtol=0, atol=0)


def test_an_old_full_teacher_gives_full_students_and_their_evaluation(tmp_path):
    """pretrain (full) -> key removed, as in a file from before the switch -> distill -> linear."""
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=12, persons=1)
    common = ["--store", str(store), "--benchmark", "ntu60-xsub", "--device", "cpu"]
    for item in SMALL:
        common += ["--set", item]

    def run(*args):
        result = CliRunner().invoke(ikem_train, [*args, *common])
        assert result.exit_code == 0, result.output

    run("pretrain", "--run", str(tmp_path / "teacher"), "--set", "model.graph_partition=full")
    teacher = tmp_path / "teacher" / "last.pt"
    payload = torch.load(teacher, weights_only=True)
    del payload["config"]["model"]["graph_partition"]
    save_checkpoint(teacher, payload)
    loaded = load_checkpoint(teacher)
    model = DistillModel(loaded["model"], loaded["config"]["model"], student_dim=48, queue_size=8)
    for encoder in (*model.teacher.values(), *model.student.values()):
        np.testing.assert_array_equal(encoder.backbone.adjacency.numpy(), spatial_adjacency("full"))

    run("distill", "--run", str(tmp_path / "student"), "--teacher", str(teacher))
    student = load_checkpoint(tmp_path / "student" / "last.pt")
    assert student["config"]["model"]["graph_partition"] == "full"
    for encoder in load_encoders(student, ["joint", "motion", "bone"]).values():
        np.testing.assert_array_equal(encoder.adjacency.numpy(), spatial_adjacency("full"))

    run("linear", "--run", str(tmp_path / "lin"), "--checkpoint", str(tmp_path / "student" / "last.pt"))
    results = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert results["graph_partition"] == "full" and results["modalities"] == ["joint", "motion", "bone"]


def test_an_old_run_resumes_on_its_own_graph(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=12, persons=1)
    run = tmp_path / "run"
    base = ["pretrain", "--store", str(store), "--benchmark", "ntu60-xsub", "--device", "cpu", "--run", str(run),
            "--modalities", "joint"]
    for item in SMALL:
        base += ["--set", item]
    result = CliRunner().invoke(ikem_train, [*base, "--set", "model.graph_partition=full"])
    assert result.exit_code == 0, result.output
    payload = torch.load(run / "last.pt", weights_only=True)
    del payload["config"]["model"]["graph_partition"]
    save_checkpoint(run / "last.pt", payload)

    # a config file that asks for the reference graph cannot silently switch the run's graph
    refused = CliRunner().invoke(ikem_train, [*base, "--resume", "--config", str(CONFIGS / "tiny-cpu.yaml")])
    assert refused.exit_code != 0 and "model.graph_partition: checkpoint 'full', now 'reference'" in refused.output
    resumed = CliRunner().invoke(ikem_train, [*base, "--resume", "--set", "optim.epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    after = load_checkpoint(run / "last.pt")
    assert after["epoch"] == 2 and after["config"]["model"]["graph_partition"] == "full"
