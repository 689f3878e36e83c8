"""UmURL (model.method: umurl): tokens, embeddings, encoder and losses against slow references
written here; augmentations; pretraining on the real NTU files; exact resume; the jobs that
accept or refuse a UmURL checkpoint; two gloo processes equal one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ikem_train import jobs
from ikem_train.checkpoint import CheckpointError, load_checkpoint
from ikem_train.config import ConfigError
from ikem_train.data.datasets import StoreError, write_synthetic_store
from ikem_train.methods import umurl as um
from ikem_train.nets.umurl import (MULTIMODAL, SpatialTemporalTransformer, TokenEmbedding, UmURLBackbone, modality,
                                   sinusoidal_positions, tokens)
from train_steps import step_losses

BENCH = "ntu60-xsub"
FRAMES = 12  # a short t_length keeps the job tests fast; the paper's 64 is tested on the real files
TINY = ["model.method=umurl", f"umurl.t_length={FRAMES}", "umurl.hidden_size=8", "umurl.projector_dim=16",
        "umurl.min_crop_frames=4", "data.batch_size=8", "data.num_workers=0", "run.device=cpu", "run.progress=false"]
# UmURL's bones (its feeder's self.Bone, 1-based): the ST-GCN / CrosSCLR pairs, root (21, 21)
UMURL_BONES = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
               (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
               (22, 23), (23, 8), (24, 25), (25, 12)]


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("umurl") / "s.zarr", n_train=16, n_val=8, frames=FRAMES,
                                 persons=2)


@pytest.fixture(scope="module")
def pretrained(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("umurl-run") / "run"
    jobs.pretrain(store, BENCH, run, overrides=TINY + ["optim.epochs=1"], log=_quiet)
    return run / "last.pt"


# -- tokens, embeddings, encoder ------------------------------------------------------------


def test_tokens_place_every_coordinate_and_mask_nothing():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, 2, generator=g)  # (N, C, T, V, M)
    x[1, :, :, :, 1] = 0  # sample 1 has no second person
    temporal, spatial = tokens(x)
    assert temporal.shape == (2, 5, 2 * 4 * 3) and spatial.shape == (2, 2 * 4, 5 * 3)
    for n in range(2):
        for c in range(3):
            for t in range(5):
                for v in range(4):
                    for m in range(2):
                        assert temporal[n, t, (m * 4 + v) * 3 + c] == x[n, c, t, v, m]
                        assert spatial[n, m * 4 + v, t * 3 + c] == x[n, c, t, v, m]
    # no mask: the absent person's 4 joints are still spatial tokens, all zero
    assert bool((spatial[1, 4:] == 0).all()) and bool((spatial[0, 4:] != 0).any())


def test_bone_and_motion_are_umurls():
    x = torch.randn(2, 3, 6, 25, 2, dtype=torch.float64)
    bone = modality(x, "bone")
    for v, u in UMURL_BONES:
        torch.testing.assert_close(bone[:, :, :, v - 1], x[:, :, :, v - 1] - x[:, :, :, u - 1], atol=0, rtol=0)
    assert bool((bone[:, :, :, 20] == 0).all())  # the root bone
    motion = modality(x, "motion")
    torch.testing.assert_close(motion[:, :, :5], x[:, :, 1:] - x[:, :, :5], atol=0, rtol=0)
    assert bool((motion[:, :, 5] == 0).all())
    assert modality(x, "joint") is x
    with pytest.raises(ValueError, match="unknown UmURL modality"):
        modality(x, "acceleration")


def test_positions_are_the_sinusoids():
    table = sinusoidal_positions(7, 6)[0].double()
    for p in range(7):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_token_embedding_shapes_and_layers():
    torch.manual_seed(0)
    emb = TokenEmbedding(6, 10, 8).double()
    t, s = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 4, 10, dtype=torch.float64)
    et, es = emb(t, s)
    assert et.shape == (2, 5, 8) and es.shape == (2, 4, 8)
    lin1, norm, _, lin2 = emb.temporal
    h = t @ lin1.weight.T + lin1.bias
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + norm.eps)
    h = torch.relu(h * norm.weight + norm.bias)
    torch.testing.assert_close(et, h @ lin2.weight.T + lin2.bias)


def _slow_layer(x, layer):
    """A post-norm transformer layer with one head, written out: attention, residual + LN, FF, residual + LN."""
    d = x.shape[-1]
    w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
    q, k, v = (x @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(3))
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1) @ v
    attention = attention @ layer.self_attn.out_proj.weight.T + layer.self_attn.out_proj.bias

    def norm(y, ln):
        return (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + ln.eps) \
            * ln.weight + ln.bias

    x = norm(x + attention, layer.norm1)
    ff = torch.relu(x @ layer.linear1.weight.T + layer.linear1.bias) @ layer.linear2.weight.T + layer.linear2.bias
    return norm(x + ff, layer.norm2)


def test_encoder_equals_a_written_out_transformer():
    torch.manual_seed(0)
    enc = SpatialTemporalTransformer(8, 1, 1).double().train()
    t, s = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 4, 8, dtype=torch.float64)
    out = enc(t, s)
    pe = sinusoidal_positions(5, 8).double()
    slow_t = _slow_layer(t + pe, enc.temporal.layers[0]).amax(dim=1)  # positions on the temporal tokens only
    slow_s = _slow_layer(s, enc.spatial.layers[0]).amax(dim=1)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out, torch.cat([slow_t, slow_s], dim=1))


def test_fused_feature_averages_the_three_embeddings():
    torch.manual_seed(0)
    net = UmURLBackbone(frames=6, persons=2, hidden_size=8).double()
    x = torch.randn(2, 3, 6, 25, 2, dtype=torch.float64)
    parts = [net.embed[m](*tokens(modality(x, m))) for m in ("joint", "bone", "motion")]
    t = sum(p[0] for p in parts) / 3 @ net.fuse_temporal.weight.T
    s = sum(p[1] for p in parts) / 3 @ net.fuse_spatial.weight.T
    torch.testing.assert_close(net.fused(x), net.encoder(t, s))
    torch.testing.assert_close(net.feature(x, MULTIMODAL), net.fused(x))
    torch.testing.assert_close(net.single(x, "bone"), net.encoder(*parts[1]))
    assert net.fused(x).shape == (2, 16)
    with pytest.raises(ValueError, match=r"UmURL expects joints \(N, 3, 6, 25, 2\)"):
        net.fused(x[:, :, :5])


def test_the_batched_encoder_pass_equals_one_pass_per_view():
    torch.manual_seed(0)
    model = um.UmURLModel({"frames": 6, "persons": 2, "hidden_size": 8}, projector_dim=12).double()
    views = [torch.randn(3, 3, 6, 25, 2, dtype=torch.float64) for _ in range(4)]
    z, z_fused = model.projections(*views)
    torch.manual_seed(0)
    for m, view in zip(("joint", "bone", "motion"), views):
        torch.testing.assert_close(z[m], model.projector[m](model.backbone.single(view, m)))
        torch.testing.assert_close(z_fused[m], model.projector[m](model.backbone.fused(views[3])))


# -- losses against their closed forms -------------------------------------------------------


def _slow_variance(z, eps):
    b, d = len(z), len(z[0])
    total = 0.0
    for j in range(d):
        mean = sum(z[i][j] for i in range(b)) / b
        var = sum((z[i][j] - mean) ** 2 for i in range(b)) / (b - 1)
        total += max(0.0, 1 - math.sqrt(var + eps))
    return total / d


def _slow_covariance(z):
    b, d = len(z), len(z[0])
    means = [sum(z[i][j] for i in range(b)) / b for j in range(d)]
    total = 0.0
    for j in range(d):
        for k in range(d):
            if j != k:
                cov = sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(b)) / (b - 1)
                total += cov ** 2
    return total / d


def _mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def test_variance_and_covariance_terms_equal_their_sums():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64) * torch.tensor([0.1, 0.5, 2.0, 1.0], dtype=torch.float64)
    assert um.variance_loss(z, 1e-4).item() == pytest.approx(_slow_variance(z.tolist(), 1e-4), rel=1e-12)
    assert um.covariance_loss(z).item() == pytest.approx(_slow_covariance(z.tolist()), rel=1e-12)
    # edge cases: constant features give the full hinge 1 - sqrt(eps); uncorrelated ones no covariance
    assert um.variance_loss(torch.ones(4, 3, dtype=torch.float64), 1e-4).item() == pytest.approx(1 - 1e-2)
    diagonal = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    assert um.covariance_loss(diagonal).item() == 0.0


def test_umurl_loss_equals_its_formula():
    g = torch.Generator().manual_seed(2)
    names = ("joint", "bone", "motion")
    z = {m: torch.randn(4, 3, generator=g, dtype=torch.float64) for m in names}
    zu = {m: torch.randn(4, 3, generator=g, dtype=torch.float64) for m in names}
    parts = um.umurl_losses(z, zu, consistency_weight=5.0, variance_weight=5.0, covariance_weight=1.0, eps=1e-4)
    zs, zus = {m: z[m].numpy() for m in names}, {m: zu[m].numpy() for m in names}
    intra = sum(_mse(zs[m], zus[m]) for m in names)
    centre = (zs["joint"] + zs["bone"] + zs["motion"]) / 3
    inter = sum(_mse(zs[m], centre) for m in names)
    every = [zs[m].tolist() for m in names] + [zus[m].tolist() for m in names]
    variance = sum(_slow_variance(x, 1e-4) for x in every)
    covariance = sum(_slow_covariance(x) for x in every)
    for name, value in (("intra", intra), ("inter", inter), ("variance", variance), ("covariance", covariance)):
        assert parts[name].item() == pytest.approx(value, rel=1e-12), name
    assert parts["loss"].item() == pytest.approx(5 * (intra + inter) + 5 * variance + covariance, rel=1e-12)
    # identical projections everywhere: no consistency loss left, only the regulariser
    same = um.umurl_losses({m: z["joint"] for m in names}, {m: z["joint"] for m in names})
    assert same["intra"].item() == 0.0 and same["inter"].item() == pytest.approx(0.0, abs=1e-30)


def test_the_centre_is_not_detached():
    names = ("joint", "bone", "motion")
    z = {m: torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for m in names}
    zu = {m: torch.randn(4, 3, dtype=torch.float64) for m in names}
    um.umurl_losses(z, zu, consistency_weight=1.0, variance_weight=0.0, covariance_weight=0.0)["inter"].backward()
    # d/dz_j of sum_m mean((z_m - c)^2), c = mean of the three, with c's own gradient: 2 (z_j - c) / (B D)
    centre = sum(z[m].detach() for m in names) / 3
    torch.testing.assert_close(z["joint"].grad, 2 * (z["joint"].detach() - centre) / 12)


# -- augmentations -------------------------------------------------------------------------


def test_a_full_crop_returns_the_sequence_and_a_crop_matches_umurls_interpolation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 20, 25, 2)).astype(np.float32)
    full = um.crop_resize(x, 37, 1.0, 1.0, 4, np.random.default_rng(1))
    np.testing.assert_allclose(full, x, atol=1e-6)
    # a store that was not resized (L = T): UmURL's window resampled by F.interpolate
    for seed in range(5):
        start, length = um.crop_window(20, 0.1, 1.0, 4, np.random.default_rng(seed))
        window = torch.from_numpy(x[:, start:start + length]).permute(0, 2, 3, 1).reshape(1, -1, length, 1)
        want = F.interpolate(window, size=(20, 1), mode="bilinear", align_corners=False)
        want = want[0, :, :, 0].reshape(3, 25, 2, 20).permute(0, 3, 1, 2).numpy()
        got = um.crop_resize(x, 20, 0.1, 1.0, 4, np.random.default_rng(seed))
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_crop_window_keeps_at_least_min_frames():
    rng = np.random.default_rng(0)
    for _ in range(200):
        start, length = um.crop_window(100, 0.1, 1.0, 64, rng)
        assert 64 <= length <= 100 and 0 <= start <= 100 - length
        start, length = um.crop_window(40, 0.1, 1.0, 64, rng)  # shorter than 64: the whole sequence
        assert (start, length) == (0, 40)


def test_joint_corruption_and_shear():
    x = np.random.default_rng(0).normal(size=(3, 4, 25, 2)).astype(np.float32) + 3
    for seed in range(6):
        out = um.joint_corruption(x, 15, 1.0, np.random.default_rng(seed))
        changed = [v for v in range(25) if not np.array_equal(out[:, :, v], x[:, :, v])]
        assert len(changed) == 15
    eye = np.zeros((3, 1, 3, 1), dtype=np.float32)
    eye[:, 0, :, 0] = np.eye(3)  # joint j is the unit vector e_j: the output columns are S
    s = um.pose_shear(eye, 1.0, np.random.default_rng(3))[:, 0, :, 0]
    assert np.allclose(np.diag(s), 1) and np.abs(s - np.eye(3)).max() <= 1 and np.abs(s - np.eye(3)).max() > 0


# -- training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_store(ntu_dir, tmp_path_factory):
    from ikem_data.gendata.run import gendata
    from ikem_data.modalities.stage import build_modalities

    path = tmp_path_factory.mktemp("real") / "ntu.zarr"
    gendata(ntu_dir, path, workers=1, progress=False, log=_quiet)
    build_modalities(path, t_length=64, progress=False)  # UmURL's 64 frames
    return path


STEPS = 30


def test_steps_on_the_real_ntu_files_lower_the_loss(real_store):
    import zarr

    root = zarr.open_group(str(real_store), mode="r")
    joint, lengths = np.asarray(root["modalities/joint"][:]), np.asarray(root["modalities/valid_length"][:])
    assert joint.shape[1:3] == (3, 64)
    torch.manual_seed(0)
    from ikem_train.config import UmURLConfig

    cfg = UmURLConfig()
    model = um.UmURLModel({"frames": 64, "persons": joint.shape[-1], "hidden_size": 32}, projector_dim=64)
    opt = um.umurl_optimizer(model.parameters(), UmURLConfig(lr=1e-2))
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the real-store fixture leaves torch at its default

    def views():
        pick = rng.choice(len(joint), size=12, replace=False)
        return [torch.from_numpy(np.stack([um.umurl_view(joint[i], lengths[i], rng, cfg) for i in pick]))
                for _ in range(4)]

    try:
        losses = step_losses(model, opt, STEPS, views)
    finally:
        torch.set_num_threads(threads)
    assert all(np.isfinite(losses))
    # the variance hinge dominates (about 6 x 5 x 0.8 at the start); step-to-step noise is about 1 %
    assert np.mean(losses[-5:]) < 0.96 * np.mean(losses[:5]), losses


def test_resume_is_exact(store, tmp_path):
    over = TINY + ["optim.epochs=3", "umurl.warmup_epochs=2"]
    straight = jobs.pretrain(store, BENCH, tmp_path / "a", overrides=over, log=_quiet)
    jobs.pretrain(store, BENCH, tmp_path / "b", overrides=over[:-2] + ["optim.epochs=2", "umurl.warmup_epochs=2"],
                  log=_quiet)
    # the run folder's config says 2 epochs: continue it to 3 with the same model and umurl sections
    resumed = jobs.pretrain(store, BENCH, tmp_path / "b", overrides=["optim.epochs=3"], resume=True, log=_quiet)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert straight["last_epoch"]["loss"] == resumed["last_epoch"]["loss"]
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 5e-4])  # warm-up over 2 epochs, then umurl.lr
    assert type(a["optimizer"]) is dict and "exp_avg" in next(iter(a["optimizer"]["state"].values()))  # Adam
    with pytest.raises(Exception, match="umurl.hidden_size"):
        jobs.pretrain(store, BENCH, tmp_path / "b", overrides=["optim.epochs=4", "umurl.hidden_size=4"], resume=True,
                      log=_quiet)


# -- refusals: one line, nothing written ---------------------------------------------------


def test_a_store_of_another_t_length_is_refused(store, tmp_path):
    with pytest.raises(StoreError, match=f"t_length={FRAMES} frames but UmURL takes umurl.t_length=64") as err:
        jobs.pretrain(store, BENCH, tmp_path / "run", overrides=[o for o in TINY if "t_length" not in o], log=_quiet)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_an_unknown_method_is_refused(store, tmp_path):
    with pytest.raises(ConfigError, match="model.method: expected one of 'ikem', 'umurl', got 'simclr'") as err:
        jobs.pretrain(store, BENCH, tmp_path / "run", overrides=TINY + ["model.method=simclr"], log=_quiet)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_distill_refuses_a_umurl_teacher(store, pretrained, tmp_path):
    with pytest.raises(CheckpointError, match="is a UmURL checkpoint: distillation needs a six-modality IKEM") as err:
        jobs.distill(store, BENCH, tmp_path / "run", teacher=pretrained, overrides=["data.num_workers=0"], log=_quiet)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


# -- evaluation ------------------------------------------------------------------------------


def test_linear_and_knn_read_the_fused_feature_and_each_modalitys(store, pretrained, tmp_path):
    over = ["linear.epochs=2", "data.num_workers=0", "run.progress=false"]
    lin = jobs.linear(store, BENCH, tmp_path / "lin", checkpoint=pretrained, overrides=over, log=_quiet)
    assert lin["modalities"] == [MULTIMODAL] and not lin["fused"] and lin["encoder_unchanged"]
    knn = jobs.knn(store, BENCH, tmp_path / "knn", checkpoint=pretrained, modalities="all", overrides=over, log=_quiet)
    assert set(knn["top1"]) == {MULTIMODAL, "joint", "bone", "motion", "fused"}
    # the features are the backbone's, computed from the stored joints
    from ikem_train.jobs import FrozenFeatures
    from ikem_train.config import load_config

    frozen = FrozenFeatures(store, BENCH, load_config(None, over), pretrained, False, "multimodal,bone")
    frozen.extract(_quiet)
    assert frozen.inputs == ("joint",) and frozen.x_val.shape[1:] == (2, 16)
    x = torch.from_numpy(frozen.val_ds[(1, np.arange(len(frozen.val_ds)))]["x"][:, 0].numpy())
    backbone = frozen.encoders[MULTIMODAL].backbone
    torch.testing.assert_close(frozen.x_val[:, 0], backbone.fused(x))
    torch.testing.assert_close(frozen.x_val[:, 1], backbone.single(x, "bone"))
    with pytest.raises(Exception, match="UmURL features are multimodal, joint, bone, motion"):
        jobs.knn(store, BENCH, tmp_path / "bad", checkpoint=pretrained, modalities="acceleration", overrides=over,
                 log=_quiet)
    assert not (tmp_path / "bad").exists()


def test_finetune_trains_the_backbone_and_its_checkpoint_evaluates(store, pretrained, tmp_path):
    over = ["optim.epochs=1", "data.batch_size=8", "data.num_workers=0", "run.progress=false", "optim.lr=0.01"]
    res = jobs.finetune(store, BENCH, tmp_path / "ft", checkpoint=pretrained, overrides=over, log=_quiet)
    assert res["modalities"] == [MULTIMODAL] and res["encoder_changed"]
    ck = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert ck["config"]["model"]["method"] == "umurl" and any(k.startswith("heads.") for k in ck["model"])
    knn = jobs.knn(store, BENCH, tmp_path / "knn", checkpoint=tmp_path / "ft" / "last.pt",
                   overrides=["data.num_workers=0"], log=_quiet)
    assert set(knn["top1"]) == {MULTIMODAL}


# -- two gloo processes equal one -------------------------------------------------------------

# Augmentations that draw the same views in every process (a full-length crop, no shear, no
# corruption); global batch 8 on 16 samples: 2 steps per epoch, 2 epochs.
SAME_VIEWS = ["umurl.crop_ratio_min=1", "umurl.crop_ratio_max=1", "umurl.spatial_amplitude=0",
              "umurl.corrupted_joints=0", "optim.epochs=2", "run.dist_timeout=30"]


def _in_float64(patch=setattr):
    """Parameters and the loader's views in float64 (as test_distributed: the float32 sums of a
    batch split over two processes come out in another order)."""
    torch.set_default_dtype(torch.float64)
    original = um.UmURLDataset.__getitem__

    def getitem(self, item):
        return {k: v.double() if v.is_floating_point() else v for k, v in original(self, item).items()}

    patch(um.UmURLDataset, "__getitem__", getitem)


def _two_process_worker(rank, store, root):
    _in_float64()
    jobs.pretrain(store, BENCH, root / "two", overrides=TINY + SAME_VIEWS, log=_quiet)


def test_two_processes_equal_one_with_the_same_global_batch(store, tmp_path, monkeypatch):
    """The projections are gathered with their gradients and the projectors' BatchNorm is
    synchronized: 2 processes x batch 4 give the weights and losses of 1 process x batch 8."""
    from test_distributed import _spawn

    _in_float64(monkeypatch.setattr)
    try:
        jobs.pretrain(store, BENCH, tmp_path / "one", overrides=TINY + SAME_VIEWS, log=_quiet)
    finally:
        torch.set_default_dtype(torch.float32)
    _spawn(_two_process_worker, store, tmp_path, limit=90.0)
    one, two = (load_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    assert two["world_size"] == 2 and one["model"].keys() == two["model"].keys()
    for key in one["model"]:
        torch.testing.assert_close(two["model"][key], one["model"][key], atol=1e-7, rtol=1e-7, msg=key)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    assert losses[0][1] != losses[0][0]  # the weights moved between the epochs


def test_equivalence_script_against_the_original_code_when_a_checkout_is_given():
    """bench/umurl_equivalence.py against a checkout of HuiGuanLab/UmURL named by $IKEM_UMURL_REPO
    (CI has none: skipped); small widths keep it quick."""
    import os
    import runpy
    from pathlib import Path

    repo = os.environ.get("IKEM_UMURL_REPO")
    if not repo or not (Path(repo) / "umurl.py").is_file():
        pytest.skip("set IKEM_UMURL_REPO to a checkout of https://github.com/HuiGuanLab/UmURL")
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "umurl_equivalence.py"))
    try:
        assert script["main"](["--umurl-repo", repo, "--hidden-size", "16", "--batch", "4"]) == 0
    finally:
        torch.set_default_dtype(torch.float32)


def test_cli_pretrain_method_and_one_line_refusals(store, pretrained, tmp_path):
    from click.testing import CliRunner
    from ikem_cli.train import main as ikem_train

    common = ["--store", str(store), "--benchmark", BENCH]
    sets = [arg for item in TINY[1:] + ["optim.epochs=1"] for arg in ("--set", item)]
    ok = CliRunner().invoke(ikem_train, ["pretrain", *common, "--method", "umurl", *sets, "--run", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert load_checkpoint(tmp_path / "a" / "last.pt")["config"]["model"]["method"] == "umurl"
    for args, message in (
            (["pretrain", *common, "--method", "simclr", "--run", str(tmp_path / "b")],
             "model.method: expected one of 'ikem', 'umurl', got 'simclr'"),
            (["distill", *common, "--teacher", str(pretrained), "--run", str(tmp_path / "b")], "is a UmURL checkpoint"),
            (["linear", *common, "--checkpoint", str(pretrained), "--modalities", "multimodal,omega",
              "--run", str(tmp_path / "b")], "UmURL features are multimodal, joint, bone, motion")):
        result = CliRunner().invoke(ikem_train, args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_evaluation_refuses_a_store_of_another_t_length(pretrained, tmp_path):
    other = write_synthetic_store(tmp_path / "t20.zarr", n_train=16, n_val=8, frames=20, persons=2)
    from ikem_train.eval.features import EvaluationError

    with pytest.raises(EvaluationError, match="t_length: store 20, checkpoint 12"):
        jobs.knn(other, BENCH, tmp_path / "knn", checkpoint=pretrained, overrides=["data.num_workers=0"], log=_quiet)
    assert not (tmp_path / "knn").exists()


def test_embed_draws_the_fused_features(store, pretrained, tmp_path):
    from ikem_train.pictures.embed import embed

    res = embed(store, BENCH, tmp_path / "map.png", checkpoint=pretrained, overrides=["data.num_workers=0"],
                log=_quiet)
    assert res["modalities"] == [MULTIMODAL] and res["samples"] == 8 and (tmp_path / "map.png").is_file()
