"""`ikem-train` bad input: one clear line, non-zero exit, nothing written to the run folder."""

import pytest
from click.testing import CliRunner

from ikem_cli.train import main as ikem_train
from ikem_data.store import open_store
from ikem_train.data.datasets import write_synthetic_store

TINY = ["--set", "data.batch_size=4", "--set", "data.num_workers=0", "--set", "model.queue_size=8",
        "--set", "optim.epochs=1", "--set", "run.progress=false", "--device", "cpu"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    full = write_synthetic_store(root / "full.zarr", n_train=8, n_val=4, frames=12, persons=1)
    raw_only = write_synthetic_store(root / "raw.zarr", n_train=8, n_val=4, frames=12, persons=1, modalities=["bone"])
    with open_store(raw_only, "r+") as store:
        store.attrs["modalities"] = {"complete": False}
    return full, raw_only


def _fails(args, *expected):
    result = CliRunner().invoke(ikem_train, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output
    return result


@pytest.mark.parametrize("case", ["no-modalities", "benchmark", "unknown-key", "bad-value", "queue", "modality"])
def test_pretrain_bad_input_is_one_clear_line(stores, tmp_path, case):
    full, raw_only = stores
    run = tmp_path / "run"
    base = ["pretrain", "--store", str(full), "--benchmark", "ntu60-xsub", "--run", str(run), *TINY]
    args, expected = {
        "no-modalities": (["pretrain", "--store", str(raw_only), "--benchmark", "ntu60-xsub", "--run", str(run),
                           "--modalities", "joint", *TINY], ["ikem-data modalities"]),
        "benchmark": ([*base[:3], "--benchmark", "ntu120-xset", *base[5:]], ["ntu120-xset", "ntu60-xsub"]),
        "unknown-key": ([*base, "--set", "optim.lrr=0.5"], ["lrr"]),
        "bad-value": ([*base, "--set", "optim.lr=-1"], ["optim.lr"]),
        "queue": ([*base, "--set", "model.queue_size=10"], ["not divisible"]),
        "modality": ([*base, "--modalities", "joint,elbow"], ["elbow", "angular_velocity"]),
    }[case]
    _fails(args, *expected)
    assert not run.exists() or not any(run.iterdir())


def test_distill_refuses_a_teacher_that_is_not_six_modality(stores, tmp_path):
    full, _ = stores
    teacher = tmp_path / "one"
    result = CliRunner().invoke(ikem_train, ["pretrain", "--store", str(full), "--benchmark", "ntu60-xsub",
                                             "--run", str(teacher), "--modalities", "joint", *TINY])
    assert result.exit_code == 0, result.output
    _fails(["distill", "--store", str(full), "--benchmark", "ntu60-xsub", "--run", str(tmp_path / "student"),
            "--teacher", str(teacher / "last.pt"), *TINY], "six modalities", "missing: motion")


@pytest.mark.parametrize("command,hint", [("pretrain", "interrupted: nothing was written yet; rerun the same command\n"),
                                          ("linear", "nothing was finished; rerun it with a new --run-dir")])
def test_ctrl_c_says_how_to_go_on(stores, tmp_path, monkeypatch, command, hint):
    from ikem_train import jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, command, interrupted)
    full, _ = stores
    args = [command, "--store", str(full), "--benchmark", "ntu60-xsub", "--run-dir", str(tmp_path / "r"), *TINY]
    result = CliRunner().invoke(ikem_train, args + (["--random-init"] if command == "linear" else []))
    assert result.exit_code == 130 and hint in result.output and "Aborted" not in result.output


def test_an_evaluation_into_a_used_folder_is_refused_without_a_resume_hint(stores, tmp_path):
    full, _ = stores
    run = tmp_path / "used"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = CliRunner().invoke(ikem_train, ["linear", "--store", str(full), "--benchmark", "ntu60-xsub",
                                             "--run-dir", str(run), "--random-init", *TINY])
    assert result.exit_code != 0 and "choose a new --run-dir" in result.output and "--resume" not in result.output


def test_the_training_log_names_the_phase_and_the_loss_parts(stores, tmp_path):
    from ikem_train import jobs

    full, _ = stores
    lines = []
    settings = ["data.batch_size=4", "data.num_workers=0", "model.queue_size=8", "optim.epochs=2",
                "model.cross_epoch=1", "run.progress=false", "run.device=cpu", "model.modalities=[joint,bone]",
                "model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8"]
    jobs.pretrain(full, "ntu60-xsub", tmp_path / "p", overrides=settings, log=lines.append)
    text = "\n".join(lines)
    assert "phase 1: one InfoNCE per modality" in text and "phase 2 (after epoch 1)" in text
    assert "(nce/joint " in text and "cross/bone " in text and "ikem/joint " in text
