"""`ikem-train plot` and `ikem-train embed` on a tiny real run: pictures of the stated size whose
pixels show the curves, the confusion matrix and the classes; bad input refused, nothing written."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ikem_cli.train import main as ikem_train
from ikem_data.class_names import NTU_ACTIONS
from ikem_train import jobs
from ikem_train.pictures import plots as pl
from ikem_train.data.datasets import write_synthetic_store
from ikem_train.pictures.embed import EMBED_PX, EmbedError, embed, subsample
from ikem_train.eval.features import EvaluationError

SMALL = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=8",
         "data.batch_size=4", "data.eval_batch_size=16", "data.num_workers=0", "optim.epochs=2",
         "run.progress=false", "run.device=cpu", "linear.epochs=4", "linear.eval_interval=1",
         "model.modalities=[joint,bone]"]
quiet = dict(log=lambda *a: None)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic store (4 classes, names S001C001P001R001A00<label+1>), a two-modality
    pretraining run and a linear evaluation of its checkpoint."""
    root = tmp_path_factory.mktemp("plots")
    store = write_synthetic_store(root / "s.zarr", n_train=24, n_val=16, frames=20, persons=1)
    pre = jobs.pretrain(store, "ntu60-xsub", root / "pre", overrides=SMALL, **quiet)
    jobs.linear(store, "ntu60-xsub", root / "linear", checkpoint=pre["checkpoint"], overrides=SMALL, **quiet)
    return {"root": root, "store": store, "checkpoint": pre["checkpoint"], "pre": root / "pre",
            "linear": root / "linear"}


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _inked(rgb):
    """Pixels that are neither white nor near-white grey."""
    return rgb.min(axis=-1) < 200


def _coloured(rgb):
    """Pixels with a clear hue (curves, cells, points), not black/grey/white."""
    return rgb.max(axis=-1) - rgb.min(axis=-1) > 60


# -- curves -------------------------------------------------------------------------------


def _cells(rgb, rows):
    """The picture cut into its panel cells, three a row."""
    h, w = rgb.shape[0] // rows, rgb.shape[1] // 3
    return [rgb[r * h:(r + 1) * h, c * w:(c + 1) * w] for r in range(rows) for c in range(3)]


def test_pretraining_curves(run):
    res = pl.plot_run(run["pre"])
    assert res["confusion"] is None and not (run["pre"] / "confusion.png").exists()
    panels = res["curves"]["panels"]
    assert list(panels) == ["loss", "loss parts", "learning rate", "samples/s"]
    assert panels["loss"] == ["loss"] and set(panels["loss parts"]) == {"loss/nce/joint", "loss/nce/bone"}
    assert res["curves"]["size"] == pl.curves_px(4) == (1500, 900)
    rgb = _rgb(run["pre"] / "curves.png")
    assert rgb.shape == (900, 1500, 3)
    cells = _cells(rgb, 2)
    # the loss parts in their modality colours, lr and samples/s in C0; two cells unused
    assert [int(_coloured(c[60:-40, 60:-20]).sum() > 100) for c in cells] == [0, 1, 1, 1, 0, 0]
    assert _inked(cells[0][60:-40, 60:-20]).sum() > 100  # the total loss: black, and the nce sum: grey
    assert not _inked(cells[5][40:-40, 40:-40]).any()


def test_linear_curves_and_confusion(run):
    res = pl.plot_run(run["linear"])
    panels = res["curves"]["panels"]
    assert panels["loss"] == ["train_loss"]
    assert panels["accuracy (%)"] == ["top1", "top5", "head_top1/bone", "head_top1/joint"]
    assert res["curves"]["size"] == pl.curves_px(3) == (1500, 450)
    cells = _cells(_rgb(run["linear"] / "curves.png"), 1)
    assert all(_inked(c[60:-40, 60:-20]).sum() > 100 for c in cells)
    assert _coloured(cells[1][60:-40, 60:-20]).sum() > 100  # top-1 of each modality's head, in its colour

    with np.load(run["linear"] / "scores.npz") as scores:
        labels, predicted = scores["label"], scores["fused"].argmax(1)
    assert res["num_class"] == 4 and res["top1"] == pytest.approx((labels == predicted).mean())
    matrix = pl.confusion_matrix(labels, predicted, 4)
    assert matrix.sum() == len(labels)
    pairs = res["confused_pairs"]
    assert sum(p["count"] for p in pairs) == (labels != predicted).sum()  # 4 classes: every error listed
    for p in pairs:
        assert p["true"] == NTU_ACTIONS[p["true_label"]] and p["predicted"] == NTU_ACTIONS[p["predicted_label"]]
        assert p["count"] == matrix[p["true_label"], p["predicted_label"]]
    side = pl.confusion_px(4)
    rgb = _rgb(run["linear"] / "confusion.png")
    assert rgb.shape == (side, side, 3) == (800, 800, 3)
    blue = (rgb[..., 2] > rgb[..., 0] + 40)  # the Blues cells and colour bar
    assert blue.sum() > 5000


def test_the_cli_prints_the_most_confused_pairs(run):
    expected = pl.plot_run(run["linear"])["confused_pairs"]
    result = CliRunner().invoke(ikem_train, ["plot", str(run["linear"])])
    assert result.exit_code == 0, result.output
    assert "curves.png" in result.output and "confusion.png: 4 classes" in result.output
    if not expected:
        assert "no val sample was confused" in result.output
    for p in expected:
        assert f"  {p['true']} -> {p['predicted']}: {p['count']} (" in result.output
    assert pl.run_class_names(run["linear"], 4)[:4] == list(NTU_ACTIONS[:4])  # from the store results.json names


def test_confused_pairs_order_and_names():
    matrix = np.array([[5, 2, 0], [4, 1, 0], [0, 2, 3]])
    pairs = pl.confused_pairs(matrix, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("b", "a", 4), ("c", "b", 2), ("a", "b", 2)]
    assert pairs[0]["share"] == pytest.approx(0.8)


def test_class_names_survive_a_moved_store(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"store": str(tmp_path / "gone.zarr")}))
    names = pl.run_class_names(tmp_path, 5, ["S001C001P001R001A001", "S001C001P001R001A003"], [0, 2])
    assert names[:3] == list(NTU_ACTIONS[:3])
    assert pl.run_class_names(tmp_path, 2, ["x", "y"], [0, 1]) == ["class 0", "class 1"]


def test_a_folder_without_metrics_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(pl.PlotError, match="has no metrics.jsonl"):
        pl.plot_run(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    with pytest.raises(pl.PlotError, match="no run folder"):
        pl.plot_run(tmp_path / "missing")
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(pl.PlotError, match="no metrics record yet"):
        pl.plot_run(tmp_path / "empty")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["metrics.jsonl"]
    result = CliRunner().invoke(ikem_train, ["plot", str(tmp_path / "missing")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "no run folder" in result.output


# -- embed --------------------------------------------------------------------------------


def test_embed_draws_every_class(run, tmp_path):
    out = tmp_path / "tsne.png"
    res = embed(run["store"], "ntu60-xsub", out, checkpoint=run["checkpoint"], modality="fused", max_samples=12,
                overrides=SMALL, **quiet)
    assert res["samples"] == 12 and res["val_samples"] == 16 and res["modalities"] == ["joint", "bone"]
    assert res["size"] == EMBED_PX
    rgb = _rgb(out)
    assert rgb.shape == (EMBED_PX[1], EMBED_PX[0], 3)
    # the four tab10 class colours (points and legend)
    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for colour in tab10:
        assert (np.abs(rgb - colour).sum(-1) < 40).sum() > 30


def test_embed_single_modality_random_init_is_reproducible(run, tmp_path):
    first = embed(run["store"], "ntu60-xsub", tmp_path / "a.png", random_init=True, modality="joint",
                  overrides=SMALL, **quiet)
    embed(run["store"], "ntu60-xsub", tmp_path / "b.png", random_init=True, modality="joint", overrides=SMALL, **quiet)
    assert first["modalities"] == ["joint"] and first["samples"] == 16
    np.testing.assert_array_equal(_rgb(tmp_path / "a.png"), _rgb(tmp_path / "b.png"))


def test_subsample_is_seeded():
    a, b = subsample(1000, 50, seed=3), subsample(1000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 50 and (np.diff(a) > 0).all() and a.max() < 1000
    assert not np.array_equal(a, subsample(1000, 50, seed=4))
    np.testing.assert_array_equal(subsample(7, 50, seed=0), np.arange(7))


@pytest.mark.parametrize("options,error,message", [
    (dict(modality="motion"), EvaluationError, "no encoder for motion"),
    (dict(max_samples=3), EmbedError, "at least 5 samples"),
    (dict(out="tsne.jpg"), EmbedError, "ending in .png"),
    (dict(checkpoint=None), EvaluationError, "give --checkpoint"),
])
def test_embed_bad_input_writes_nothing(run, tmp_path, options, error, message):
    args = dict(checkpoint=run["checkpoint"], out="tsne.png")
    args.update(options)
    out = tmp_path / "pics" / args.pop("out")
    with pytest.raises(error, match=message):
        embed(run["store"], "ntu60-xsub", out, overrides=SMALL, **args, **quiet)
    assert not (tmp_path / "pics").exists()


def test_embed_cli(run, tmp_path):
    out = tmp_path / "cli.png"
    base = ["embed", "--store", str(run["store"]), "--benchmark", "ntu60-xsub", "--checkpoint", run["checkpoint"],
            "--out", str(out)] + [arg for item in SMALL for arg in ("--set", item)]
    bad = CliRunner().invoke(ikem_train, base + ["--modality", "motion"])
    assert bad.exit_code == 1 and "no encoder for motion" in bad.output and not out.exists()
    good = CliRunner().invoke(ikem_train, base + ["--modality", "bone", "--max-samples", "10"])
    assert good.exit_code == 0, good.output
    assert "10 of 16 val samples" in good.output and Image.open(out).size == EMBED_PX


def test_plot_skips_records_with_bad_epochs_and_refuses_malformed_scores(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"epoch": None, "loss": 1.0}, {"epoch": "two", "loss": 1.0}, {"epoch": True, "loss": 1.0},
             {"epoch": 1.5, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "top1": "high"}, {"epoch": 2, "loss": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = pl.read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2]
    np.savez(run / "scores.npz", fused=np.zeros(3, np.float32), label=np.zeros(3, np.int64))
    result = CliRunner().invoke(ikem_train, ["plot", str(run)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "fused must be (n, C) float logits, got float32 of shape (3,)" in result.output


def test_cross_phase_is_marked_and_the_cli_counts_the_lines_drawn(tmp_path):
    """A teacher's total loss jumps where the cross-phase terms join; the picture marks that epoch
    (a red dotted line), a term logged at one epoch says so, and `plot` counts every line of a
    panel, the group sums included (it printed "loss: 1 curve(s)" for total + nce + cross + ikem)."""
    run = tmp_path / "teacher"
    run.mkdir()
    records = [{"epoch": e, "kind": "pretrain", "loss": 2.0 + e, "loss/nce/joint": 1.0, "loss/nce/bone": 1.0 + e,
                "lr": 0.1} for e in (1, 2)]
    records.append({"epoch": 3, "kind": "pretrain", "loss": 9.0, "loss/nce/joint": 1.0, "loss/nce/bone": 3.0,
                    "loss/cross/joint": 2.5, "loss/cross/bone": 2.5, "lr": 0.1})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    series = pl._series(records)
    assert pl.cross_phase_start(series) == 3
    assert pl.cross_phase_start(pl._series(records[:2])) is None
    assert pl.cross_phase_start(pl._series(records[2:])) is None  # resumed in the cross phase: no jump to mark
    res = pl.plot_curves(records, run / "curves.png")
    assert res["cross_phase_from"] == 3
    assert res["lines"] == {"loss": 3, "loss parts": 4, "learning rate": 1}
    rgb = _rgb(run / "curves.png")
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)  # tab:red
    assert red[:, :1000].sum() > 50 and red[:, 1000:].sum() == 0  # loss panels marked, the lr panel not
    result = CliRunner().invoke(ikem_train, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert "loss: 3 curves; loss parts: 4 curves; learning rate: 1 curve" in result.output


def test_tsne_title_says_collapse_and_bn_statistics(run, tmp_path):
    """t-SNE rescales any spread into clean clusters, so the title must say when the features
    collapsed (a random encoder in eval mode without BN recalibration) and which BN statistics."""
    raw = embed(run["store"], "ntu60-xsub", tmp_path / "raw.png", random_init=True, modality="joint",
                overrides=SMALL, **quiet)
    assert raw["feature_health"]["joint"]["collapsed"]
    assert raw["title"].endswith("COLLAPSED features (joint), BN statistics as trained")
    fixed = embed(run["store"], "ntu60-xsub", tmp_path / "fixed.png", random_init=True, modality="joint",
                  overrides=SMALL + ["evaluation.bn_recalibrate=true"], **quiet)
    assert not fixed["feature_health"]["joint"]["collapsed"]
    assert fixed["title"].endswith("features not collapsed, BN statistics recomputed on train")


def test_a_linear_curve_and_results_json_name_one_thing_alike(run):
    """`top-1 joint` on the curves once meant one head of the fused classifier while results.json's
    per_modality_top1 meant each modality's own classifier. Now the curve's metric is head_top1/<m>
    (labelled "head of the fused classifier"), no metric is called top1/<m>, and the fused
    top-1 drawn at the last epoch is results.json's final top-1."""
    records = pl.read_metrics(run["linear"])
    results = json.loads((run["linear"] / "results.json").read_text())
    assert not any(key.startswith("top1/") for record in records for key in record)
    assert {key for key in records[-1] if key.startswith("head_top1/")} == {"head_top1/joint", "head_top1/bone"}
    assert records[-1]["epoch"] == results["final"]["epoch"] and records[-1]["top1"] == results["final"]["top1"]
    assert set(results["per_modality_top1"]) == {"joint", "bone"}
