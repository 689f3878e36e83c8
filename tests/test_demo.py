"""The README's first command runs `ikem-train demo`: run it whole, as a user would."""

import json

from click.testing import CliRunner

from ikem_cli.train import main as ikem_train
from ikem_data.store import open_store


def test_demo_runs_the_whole_method_and_reports(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(ikem_train, ["demo", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "SMOKE RUN" in result.output and "not a benchmark" in result.output

    with open_store(out / "demo.zarr") as store:
        assert store.attrs["gendata"]["complete"] and store.attrs["modalities"]["complete"]
        n_train = len(store.split("custom", "train"))
    summary = json.loads((out / "summary.json").read_text())
    teacher, student = summary["results"]["teacher"], summary["results"]["student"]
    assert teacher["modalities"] == ["joint", "motion", "bone", "acceleration", "rotation_axis", "angular_velocity"]
    assert student["modalities"] == ["joint", "motion", "bone"]
    for res in (teacher, student):
        assert res["fused"] and res["encoder_unchanged"] and res["train_samples"] == n_train
        assert 0.0 <= res["final"]["top1"] <= res["final"]["top5"] <= 1.0
        assert f"{100 * res['final']['top1']:.1f}%" in result.output
    metrics = [json.loads(line) for line in (out / "runs" / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("epoch", 0) for m in metrics) == 4


def test_demo_never_overwrites_an_earlier_demo(tmp_path):
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(ikem_train, ["demo", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "earlier demo" in result.output
