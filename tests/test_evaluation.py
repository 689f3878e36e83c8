"""Evaluation: KNN against brute force, label subsets, feature health, BN recalibration,
store/checkpoint agreement, and the linear / knn / finetune jobs on a tiny real checkpoint."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ikem_cli.train import main as ikem_train
from ikem_data.store import open_store
from ikem_train.eval import features as ev
from ikem_train import jobs
from ikem_train.checkpoint import load_checkpoint, save_checkpoint
from ikem_train.data.datasets import ModalityDataset, write_synthetic_store
from ikem_train.eval.finetune import label_subset
from ikem_train.eval.knn import fuse_features, knn_predict
from ikem_train.methods.model import encoder_state_dicts

MODS = ["joint", "bone"]
SMALL = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=8",
         "data.batch_size=4", "data.eval_batch_size=16", "data.num_workers=0", "optim.epochs=1",
         "run.progress=false", "run.device=cpu", "linear.epochs=3", "linear.eval_interval=1",
         "finetune.eval_interval=1", f"model.modalities=[{','.join(MODS)}]"]
quiet = dict(log=lambda *a: None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A synthetic store and a two-modality checkpoint pretrained on it through the job."""
    root = tmp_path_factory.mktemp("eval")
    store = write_synthetic_store(root / "s.zarr", n_train=24, n_val=12, frames=20, persons=1)
    res = jobs.pretrain(store, "ntu60-xsub", root / "pre", overrides=SMALL, **quiet)
    return store, res["checkpoint"]


# -- KNN ---------------------------------------------------------------------------------


def _brute_force_knn(gallery, labels, queries, k):
    """Cosine k-NN one query at a time: majority vote, ties to the class met first by similarity."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    out = []
    for q in queries:
        sim = g @ (q / np.linalg.norm(q))
        order = np.argsort(-sim, kind="stable")[:k]
        votes = {}
        for i in order:
            votes[labels[i]] = votes.get(labels[i], 0) + 1
        best = max(votes.values())
        out.append(next(labels[i] for i in order if votes[labels[i]] == best))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_equals_brute_force_cosine(k):
    rng = np.random.default_rng(k)
    gallery = rng.normal(size=(300, 16)) * rng.uniform(0.1, 10, size=(300, 1))  # norms must not matter
    labels = rng.integers(0, 7, size=300)
    queries = rng.normal(size=(90, 16))
    got = knn_predict(torch.from_numpy(gallery).float(), torch.from_numpy(labels), torch.from_numpy(queries).float(),
                      k, chunk=32)
    np.testing.assert_array_equal(got.numpy(), _brute_force_knn(gallery.astype(np.float32), labels,
                                                                queries.astype(np.float32), k))
    assert (got.numpy() == labels[0]).mean() < 1  # not a constant answer


def test_knn_ties_go_to_the_lower_gallery_index():
    gallery = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 are the same direction
    labels = torch.tensor([3, 1, 2])
    assert knn_predict(gallery, labels, torch.tensor([[1.0, 0.1]]), 1).tolist() == [3]
    with pytest.raises(ValueError, match="between 1 and the 3 train samples"):
        knn_predict(gallery, labels, gallery, 4)


def test_fused_features_give_the_mean_of_per_modality_cosines():
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.normal(size=(5, 3, 8))).float() for _ in range(2))
    per = torch.stack([torch.nn.functional.cosine_similarity(a[:, k, None], b[None, :, k], dim=-1)
                       for k in range(3)]).mean(0)
    torch.testing.assert_close(fuse_features(a) @ fuse_features(b).T, per)


# -- labelled subsets ----------------------------------------------------------------------


def test_label_subset_is_per_class_seeded_and_of_the_asked_size():
    labels = np.repeat(np.arange(6), [100, 37, 55, 10, 260, 49])
    rng_shuffle = np.random.default_rng(0).permutation(len(labels))
    labels = labels[rng_shuffle]
    pick = label_subset(labels, 0.1, seed=3)
    counts = np.bincount(labels[pick], minlength=6)
    np.testing.assert_array_equal(counts, [10, 4, 6, 1, 26, 5])  # floor(0.1 n_c + 0.5)
    assert len(np.unique(pick)) == len(pick) and (np.diff(pick) > 0).all()
    np.testing.assert_array_equal(pick, label_subset(labels, 0.1, seed=3))
    assert not np.array_equal(pick, label_subset(labels, 0.1, seed=4))
    assert len(label_subset(labels, 1.0, seed=0)) == len(labels)
    with pytest.raises(ValueError, match="class 3 .10 train samples. without a labelled sample; use at least 0.05"):
        label_subset(labels, 0.01, seed=0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            label_subset(labels, bad, seed=0)


# -- feature health and BN recalibration ---------------------------------------------------


def test_collapse_detector_fires_on_a_fresh_encoder_and_not_after_recalibration(pretrained):
    store, _ = pretrained
    cfg = {"in_channels": 3, "hidden_channels": 4, "hidden_dim": 16, "dropout": 0.5, "graph_partition": "reference"}
    encoders = ev.random_encoders(cfg, ["joint"], seed=0)
    data = ModalityDataset(store, "ntu60-xsub", "train", ["joint"])
    fresh, _, _ = ev.extract_features(encoders, data, 16, "cpu")
    health = ev.feature_health(fresh, ["joint"], 0.01)
    assert health["joint"]["collapsed"] and health["joint"]["scale"] < 1e-3 and health["joint"]["std"] < 1e-3
    assert "--bn-recalibrate" in ev.collapse_warning(health, 0.01, recalibrated=False)
    weights = {k: v.clone() for k, v in encoders.state_dict().items() if "running" not in k and "num_batches" not in k}
    ev.recalibrate_bn(encoders, data, 16, "cpu")
    assert not encoders.training and all(torch.equal(v, encoders.state_dict()[k]) for k, v in weights.items())
    after, _, _ = ev.extract_features(encoders, data, 16, "cpu")
    health = ev.feature_health(after, ["joint"], 0.01)
    assert not health["joint"]["collapsed"] and min(health["joint"]["std"], health["joint"]["relative"]) > 0.05
    assert ev.collapse_warning(health, 0.01, recalibrated=True) is None


def test_feature_stats_by_hand():
    f = torch.tensor([[1.0, -2.0], [3.0, 2.0]])  # per-dimension std 1 and 2, mean |f| 2
    assert ev.feature_stats(f) == {"std": 1.5, "scale": 2.0, "relative": 0.75}
    same_direction = torch.ones(10, 4) * 5 + torch.randn(10, 4) * 1e-4
    health = ev.feature_health(same_direction[:, None], ["joint"], 0.01)["joint"]
    assert health["collapsed"] and health["relative"] < 1e-4
    assert ev.feature_health(torch.zeros(3, 1, 2), ["joint"], 0.01)["joint"]["collapsed"]


def test_non_finite_features_are_an_error():
    x = torch.zeros(4, 2, 3)
    x[1, 1, 0] = float("nan")
    with pytest.raises(ev.EvaluationError, match="non-finite .* bone"):
        ev.feature_health(x, ["joint", "bone"], 0.01)


def test_class_report_by_hand():
    rep = ev.class_report(pred=[0, 0, 1, 2, 2, 2], labels=[0, 1, 1, 2, 2, 3], train_labels=[0, 1, 2, 2, 2],
                          num_class=4)
    assert rep["per_class"] == [{"label": 0, "n": 1, "top1": 1.0}, {"label": 1, "n": 2, "top1": 0.5},
                                {"label": 2, "n": 2, "top1": 1.0}, {"label": 3, "n": 1, "top1": 0.0}]
    assert rep["balanced_top1"] == pytest.approx(0.625) and rep["chance"] == 0.25
    assert rep["majority_baseline"] == pytest.approx(2 / 6) and rep["unseen_val_classes"] == [3]


# -- store / checkpoint agreement ----------------------------------------------------------


def _with_params(path, **params):
    with open_store(path, "r+") as store:
        attrs = store.attrs["modalities"]
        attrs["params"].update(params)
        store.attrs["modalities"] = attrs
    return path


def test_a_store_with_other_modality_settings_is_refused(pretrained, tmp_path):
    store, checkpoint = pretrained
    assert load_checkpoint(checkpoint)["store_params"]["bone_pairs"] == "ikem"
    # t_length 64 as the arrays are (a store whose recorded t_length disagrees with them is refused as damaged)
    other = _with_params(write_synthetic_store(tmp_path / "o.zarr", n_train=24, n_val=12, frames=64, persons=1),
                         bone_pairs="crossclr")
    with pytest.raises(ev.EvaluationError, match="t_length: store 64, checkpoint 20; bone_pairs: store 'crossclr', "
                                                 "checkpoint 'ikem'"):
        jobs.knn(other, "ntu60-xsub", tmp_path / "knn", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert not (tmp_path / "knn").exists()


def test_transfer_to_another_store_with_the_same_settings(pretrained, tmp_path):
    _, checkpoint = pretrained
    other = write_synthetic_store(tmp_path / "t.zarr", n_train=20, n_val=10, frames=20, persons=2, seed=5,
                                  num_class=3)
    res = jobs.knn(other, "ntu60-xsub", tmp_path / "knn", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert res["store"] == str(other) and res["train_samples"] == 20 and res["num_class"] == 3


# -- the jobs ------------------------------------------------------------------------------


def test_linear_leaves_the_encoders_and_finetune_changes_them(pretrained, tmp_path):
    store, checkpoint = pretrained
    lin = jobs.linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert lin["encoder_unchanged"] is True and set(lin["per_modality_top1"]) == set(MODS)
    assert (tmp_path / "lin" / "config.yaml").is_file() and lin["per_class"] and lin["unseen_val_classes"] == []
    assert json.loads((tmp_path / "lin" / "results.json").read_text())["final"] == lin["final"]
    joint = jobs.linear(store, "ntu60-xsub", tmp_path / "lin-joint", checkpoint=checkpoint, modalities=["joint"],
                        overrides=SMALL, **quiet)
    assert joint["per_modality_top1"]["joint"] == joint["final"]["top1"] == lin["per_modality_top1"]["joint"]

    ft = jobs.finetune(store, "ntu60-xsub", tmp_path / "ft", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert ft["encoder_changed"] is True and ft["train_samples"] == 24 and ft["final"]["epoch"] == 1
    before = encoder_state_dicts(load_checkpoint(checkpoint)["model"], MODS)
    after = encoder_state_dicts(load_checkpoint(tmp_path / "ft" / "last.pt", kind="finetune")["model"], MODS)
    assert any(not torch.equal(before[m][k], after[m][k]) for m in MODS for k in before[m])
    # a fine-tuned checkpoint is evaluated like any other
    again = jobs.knn(store, "ntu60-xsub", tmp_path / "knn", checkpoint=tmp_path / "ft" / "last.pt",
                     overrides=SMALL, **quiet)
    assert again["checkpoint_kind"] == "finetune" and set(again["top1"]) == {*MODS, "fused"}


def test_the_frozen_check_is_a_real_comparison(pretrained, tmp_path, monkeypatch):
    store, checkpoint = pretrained
    from ikem_train.eval import linear as linear_module

    real_fit = linear_module.fit_linear
    made = []  # the FrozenFeatures of this run

    def fit_and_touch(*args, **kwargs):  # a classifier step that wrongly writes into an encoder
        out = real_fit(*args, **kwargs)
        next(iter(made[-1].encoders.values())).data_bn.weight.data += 1
        return out

    original_init = jobs.FrozenFeatures.__init__

    def remember(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(jobs.FrozenFeatures, "__init__", remember)
    monkeypatch.setattr(linear_module, "fit_linear", fit_and_touch)
    with pytest.raises(ev.EvaluationError, match="frozen encoder weights changed.*data_bn.weight"):
        jobs.linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint, overrides=SMALL, **quiet)


def test_semi_supervised_and_from_scratch(pretrained, tmp_path):
    store, checkpoint = pretrained
    semi = jobs.finetune(store, "ntu60-xsub", tmp_path / "semi", checkpoint=checkpoint,
                         overrides=SMALL + ["finetune.label_fraction=0.5"], **quiet)
    saved = np.load(tmp_path / "semi" / "labelled_train_indices.npy")
    with open_store(store) as s:
        train = s.split("ntu60-xsub", "train")
        labels = np.asarray(s["raw/label"][...])
    expected = np.floor(0.5 * np.bincount(labels[train]) + 0.5).sum()
    assert semi["train_samples"] == len(saved) == expected and semi["label_fraction"] == 0.5
    assert set(saved) <= set(train.tolist()) and len(np.unique(labels[saved])) == 4
    scratch = jobs.finetune(store, "ntu60-xsub", tmp_path / "scratch", from_scratch=True, overrides=SMALL, **quiet)
    assert scratch["from_scratch"] and scratch["checkpoint"] is None and scratch["encoder_changed"]
    rand = jobs.linear(store, "ntu60-xsub", tmp_path / "rand", random_init=True, overrides=SMALL, **quiet)
    assert rand["random_init"] and rand["modalities"] == MODS


def _cli_fails(args, *expected):
    result = CliRunner().invoke(ikem_train, args)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    for text in expected:
        assert text in result.output, result.output


@pytest.mark.parametrize("case", ["fraction-range", "fraction-small", "k", "scratch-and-checkpoint", "neither",
                                  "mismatch"])
def test_bad_evaluation_input_is_one_clear_line_and_writes_nothing(pretrained, tmp_path, case):
    store, checkpoint = pretrained
    run = tmp_path / "run"
    sets = [a for item in SMALL for a in ("--set", item)]
    base = ["--store", str(store), "--benchmark", "ntu60-xsub", "--run-dir", str(run), *sets]
    mismatched = tmp_path / "m.zarr"
    if case == "mismatch":
        _with_params(write_synthetic_store(mismatched, n_train=24, n_val=12, frames=20, persons=1), bone_pairs="crossclr")
    args, expected = {
        "fraction-range": (["finetune", *base, "--checkpoint", checkpoint, "--label-fraction", "1.5"],
                           ["finetune.label_fraction"]),
        "fraction-small": (["finetune", *base, "--checkpoint", checkpoint, "--label-fraction", "0.01"],
                           ["without a labelled sample"]),
        "k": (["knn", *base, "--checkpoint", checkpoint, "--k", "25"], ["larger than the 24 train samples"]),
        "scratch-and-checkpoint": (["finetune", *base, "--checkpoint", checkpoint, "--from-scratch"],
                                   ["do not give --checkpoint"]),
        "neither": (["linear", *base], ["--random-init"]),
        "mismatch": (["linear", "--store", str(mismatched), *base[2:], "--checkpoint", checkpoint],
                     ["bone_pairs: store 'crossclr', checkpoint 'ikem'"]),
    }[case]
    _cli_fails(args, *expected)
    assert not run.exists()


def test_the_cli_prints_health_and_baselines(pretrained, tmp_path):
    store, checkpoint = pretrained
    sets = [a for item in SMALL for a in ("--set", item)]
    result = CliRunner().invoke(ikem_train, ["knn", "--store", str(store), "--benchmark", "ntu60-xsub", "--run",
                                             str(tmp_path / "k"), "--checkpoint", checkpoint, "--bn-recalibrate",
                                             "--k", "3", *sets])
    assert result.exit_code == 0, result.output
    assert "KNN (k=3, cosine)" in result.output and "feature spread" in result.output and "chance 25.00 %" in result.output
    res = json.loads((tmp_path / "k" / "results.json").read_text())
    assert res["bn_recalibrate"] is True and res["k"] == 3
    assert "bn_recalibrate: true" in (tmp_path / "k" / "config.yaml").read_text()


def test_an_old_checkpoint_without_store_params_still_evaluates(pretrained, tmp_path):
    store, checkpoint = pretrained
    payload = torch.load(checkpoint, weights_only=True)
    del payload["store_params"]
    save_checkpoint(tmp_path / "old.pt", payload)
    res = jobs.knn(store, "ntu60-xsub", tmp_path / "knn", checkpoint=tmp_path / "old.pt", overrides=SMALL, **quiet)
    assert res["store_params"]["bone_pairs"] == "ikem"


def test_linear_and_knn_share_one_extraction(pretrained, tmp_path, monkeypatch):
    store, checkpoint = pretrained
    calls = []
    real = ev.extract_features
    monkeypatch.setattr(ev, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    both = jobs.frozen_evaluation(store, "ntu60-xsub", {"linear": tmp_path / "l", "knn": tmp_path / "k"},
                                  checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert len(calls) == 2  # train and val, once for both protocols
    assert both["linear"]["feature_health"] == both["knn"]["feature_health"]
    assert json.loads((tmp_path / "k" / "results.json").read_text())["job"] == "knn"
    alone = jobs.knn(store, "ntu60-xsub", tmp_path / "k2", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert alone["top1"] == both["knn"]["top1"]
    with pytest.raises(ev.EvaluationError, match="unknown evaluation protocol"):
        jobs.frozen_evaluation(store, "ntu60-xsub", {"svm": tmp_path / "s"}, checkpoint=checkpoint, overrides=SMALL)


def test_a_store_with_another_skeleton_is_refused(pretrained, tmp_path):
    _, checkpoint = pretrained
    other = write_synthetic_store(tmp_path / "v17.zarr", n_train=24, n_val=12, frames=20, persons=1)
    with open_store(other, "r+") as store:  # a 17-joint skeleton, e.g. COCO keypoints
        for m in MODS:
            store.create_array(f"modalities/{m}", (36, 3, 20, 17, 1), np.float32, overwrite=True)[...] = 1.0
    with pytest.raises(ev.EvaluationError, match="joints: store 17, encoders 25"):
        jobs.linear(other, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint, overrides=SMALL, **quiet)
    assert not (tmp_path / "lin").exists()


def test_diverging_linear_classifiers_are_an_error(pretrained, tmp_path):
    store, checkpoint = pretrained
    with pytest.raises(ev.EvaluationError, match="diverged .*non-finite val logits.*lower linear.lr"):
        jobs.linear(store, "ntu60-xsub", tmp_path / "lin", checkpoint=checkpoint,
                    overrides=SMALL + ["linear.lr=1e30"], **quiet)
    assert not (tmp_path / "lin" / "results.json").exists()


def test_the_frozen_comparison_treats_nan_as_equal_to_nan():
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    before = ev.parameter_snapshot(module)
    assert ev.changed_parameters(before, module) == []
    with torch.no_grad():
        module.bias[1] += 1
    assert ev.changed_parameters(before, module) == ["bias"]


def test_evaluation_batches_never_start_more_workers_than_cores(tmp_path, monkeypatch):
    """Evaluation batches are not augmented, so capping the workers at the cores changes only speed."""
    from ikem_train.data.datasets import ModalityDataset, write_synthetic_store
    from ikem_train.eval import features

    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=20)
    dataset = ModalityDataset(store, "ntu60-xsub", "val", ["joint"])
    asked = []
    real = features.make_loader

    def make_loader(*args, **kwargs):
        asked.append(kwargs["num_workers"])
        return real(*args, **{**kwargs, "num_workers": 0})

    monkeypatch.setattr(features, "make_loader", make_loader)
    n = sum(len(x) for x, _, _ in features.eval_batches(dataset, 2, "cpu", num_workers=10_000))
    assert n == len(dataset) and asked == [features.usable_cores()] and asked[0] < 10_000


def test_finetune_has_its_own_dropout_and_epochs(pretrained, tmp_path):
    """finetune.dropout / .epochs / .milestones set what a checkpoint's model section and the shared
    optim section would otherwise fix (a pretrained encoder's dropout could not be changed)."""
    import yaml

    store, checkpoint = pretrained
    res = jobs.finetune(store, "ntu60-xsub", tmp_path / "ft", checkpoint=checkpoint,
                        overrides=SMALL + ["finetune.dropout=0", "finetune.epochs=2", "finetune.milestones=[1]"], **quiet)
    recorded = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert recorded["model"]["dropout"] == 0 and recorded["optim"]["epochs"] == 2
    assert recorded["optim"]["milestones"] == [1]
    lrs = {json.loads(line)["epoch"]: json.loads(line).get("lr")
           for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines() if "lr" in json.loads(line)}
    assert lrs[2] == pytest.approx(lrs[1] * recorded["optim"]["gamma"])  # stepped down after epoch 1
    assert load_checkpoint(checkpoint)["config"]["model"]["dropout"] == 0.5
    assert res["final"]["epoch"] == 2
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(epochs)) == [1, 2]
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["model"]["dropout"] == 0
