"""The README's first command runs `ikem-train demo`: run it as a user would (shortened)."""

import json
from pathlib import Path

from click.testing import CliRunner

from ikem_cli.train import main as ikem_train
from ikem_data.store import open_store
from ikem_train.demo import ROWS

# One seed and one epoch per training job keep the test short; the full demo's table is
# in the README and in the closing notes.
SHORT = ["--seeds", "1", "--set", "optim.epochs=1", "--set", "finetune.epochs=1", "--set", "model.cross_epoch=0",
         "--set", "linear.epochs=10", "--set", "linear.milestones=[8]"]
# Narrow encoders: every stage and row still runs; the full widths cost CI four minutes.
NARROW = ["--set", "model.hidden_channels=4", "--set", "model.hidden_dim=32", "--set", "model.feature_dim=16",
          "--set", "distill.student_dim=96"]


def test_demo_runs_the_whole_method_and_reports(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(ikem_train, ["demo", "--out", str(out), "--device", "cpu", *SHORT, *NARROW])
    assert result.exit_code == 0, result.output
    assert "SMOKE RUN" in result.output and "not a benchmark" in result.output
    assert "chance: 20.0 %" in result.output and "class-balanced" in result.output
    assert "collapsed frozen features: none" in result.output
    assert "supervised model's own classifier (end to end, not frozen): val top-1 " in result.output
    assert "seed 0 (1 of 1, runs/seed0): " in result.output and "pictures (seed 0, runs/seed0):" in result.output

    with open_store(out / "demo.zarr") as store:
        assert store.attrs["gendata"]["complete"] and store.attrs["modalities"]["complete"]
        n_train = len(store.split("custom", "train"))
        val_labels = store["raw/label"][...][store.split("custom", "val")]
    assert len(set(val_labels.tolist())) == 5 and len(val_labels) == 5 * (val_labels == 0).sum()

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == {row for row, *_ in ROWS} and summary["seeds"] == 1
    for row, label, meaning in ROWS:
        assert label in result.output and meaning in result.output
        cells = summary["rows"][row]
        assert all(0.0 <= cells[col]["mean"] <= 1.0 and len(cells[col]["values"]) == 1 for col in ("linear", "knn"))
    assert set(summary["per_stream"]["teacher"]) == {"joint", "motion", "bone", "acceleration", "rotation_axis",
                                                     "angular_velocity"}
    runs = out / "runs" / "seed0"
    teacher = json.loads((runs / "linear-teacher" / "results.json").read_text())
    assert teacher["bn_recalibrate"] and teacher["encoder_unchanged"] and teacher["train_samples"] == n_train
    assert not any(h["collapsed"] for h in teacher["feature_health"].values())
    assert (runs / "knn-student" / "config.yaml").is_file()
    assert len(summary["pictures"]) == 6
    for what, path in summary["pictures"].items():
        assert path in result.output and Path(path).stat().st_size > 1000, what
    assert json.loads((runs / "linear-random-6" / "results.json").read_text())["random_init"]
    own = json.loads((runs / "supervised" / "results.json").read_text())["final"]["top1"]
    assert summary["supervised_end_to_end"]["values"] == [own]


def test_demo_never_overwrites_an_earlier_demo(tmp_path):
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(ikem_train, ["demo", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "earlier demo" in result.output and "Traceback" not in result.output


def test_the_demo_protocol_runs_on_a_store_of_kinect_v1_skeletons(tmp_path):
    """The same rows on a real UTD-MHAD subset (20-joint Kinect v1): subject 1 trains, 2 validates."""
    import shutil

    import pytest

    from conftest import SHARED_DATA
    from ikem_data.gendata.run import gendata
    from ikem_data.modalities.stage import build_modalities

    utd = SHARED_DATA / "utd_mhad_skeleton"
    if not utd.is_dir():
        pytest.skip(f"real data not found in {utd}")
    raw = tmp_path / "Skeleton"
    raw.mkdir()
    for action in range(1, 5):
        for subject in (1, 2):
            for trial in (1, 2, 3):
                shutil.copy(utd / f"a{action}_s{subject}_t{trial}_skeleton.mat", raw)
    store = tmp_path / "utd.zarr"
    gendata(str(raw), str(store), input_format="utd-mhad", workers=1, progress=False, log=lambda m: None)
    build_modalities(str(store), progress=False)
    out = tmp_path / "demo"
    result = CliRunner().invoke(ikem_train, ["demo", "--store", str(store), "--benchmark", "utd-xsub", "--out", str(out),
                                             "--device", "cpu", *SHORT, *NARROW, "--set", "data.batch_size=4",
                                             "--set", "model.queue_size=8", "--set", "distill.queue_size=8"])
    assert result.exit_code == 0, result.output
    assert "SMOKE RUN" not in result.output and "utd-xsub" in result.output
    assert "chance: 25.0 %" in result.output and "class-balanced" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["bundled"] and summary["benchmark"] == "utd-xsub" and summary["config"].endswith("small_data.yaml")
    assert set(summary["rows"]) == {row for row, *_ in ROWS} and set(summary["margins"]) == {"teacher", "student",
                                                                                             "skeletonclr"}
    assert "right arm swipe to the left" in summary["per_class"]["student"]
    single = json.loads((out / "runs" / "seed0" / "linear-skeletonclr" / "results.json").read_text())
    assert single["modalities"] == ["joint"] and single["val_samples"] == 12
    assert (out / "runs" / "seed0" / "skeletonclr" / "last.pt").is_file() and not (out / "demo.zarr").exists()


def test_the_demo_protocol_refuses_a_store_without_its_benchmark(tmp_path):
    result = CliRunner().invoke(ikem_train, ["demo", "--store", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--store needs --benchmark" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(ikem_train, ["demo", "--benchmark", "nwucla-xview", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--benchmark needs --store" in result.output


def test_the_supervised_baseline_learns_its_own_classifier(tmp_path):
    """With the demo's settings, the from-scratch model's own end-to-end classifier beats chance
    (20 %, five balanced classes) by a wide margin on the bundled clips; under the shared
    3-epoch schedule with dropout 0.5 it answered one class for every val clip (20 %), and
    10 epochs on the pretraining's milestones (lr stepped down after epoch 3) gave 22.5 %."""
    from ikem_train import jobs
    from ikem_train.demo import DEMO_CONFIG, _bundled_store

    store = _bundled_store(tmp_path)
    res = jobs.finetune(store, "custom", tmp_path / "supervised", from_scratch=True, modalities=["joint"],
                        config=DEMO_CONFIG, overrides=["run.device=cpu"], log=lambda *a: None)
    assert res["final"]["epoch"] == 10 and res["final"]["top1"] >= 0.5, res["final"]  # seeds 0-2: 60, 80, 60 %
    assert len({c["label"] for c in res["per_class"] if c["top1"] > 0}) >= 3  # not one class for every clip


def test_the_readme_sample_output_is_the_saved_run_as_todays_code_prints_it():
    """README's demo block is rendered by tools/readme_demo.py from a saved real run, and that
    run's summary.json, printed by today's table code, gives exactly the saved table: a change
    to what the demo prints fails here until the README is regenerated."""
    import importlib.util

    from ikem_train.demo import _print_table

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("readme_demo", root / "tools" / "readme_demo.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.readme_block((root / "README.md").read_text()) == tool.render_block()
    header, printed = tool.saved_run()
    lines = []
    _print_table(json.loads((tool.SAVED / "summary.json").read_text()), lines.append)
    assert "\n".join(lines).strip("\n") == tool.table_of(printed)
    assert header["machine"] and header["wall_seconds"] > 0
