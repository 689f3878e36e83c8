"""20 SkeletonCLR (MoCo, joint) steps on the real NTU files: gendata -> modalities -> training."""

import numpy as np
import pytest
import torch

from ikem_data.modalities.stage import build_modalities
from ikem_data.gendata.run import gendata
from ikem_train.data.augment import augment, worker_rng
from ikem_train.methods.model import PretrainModel
from train_steps import step_losses


@pytest.fixture(scope="module")
def real_joint(ntu_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("real") / "ntu.zarr"
    gendata(ntu_dir, store, workers=1, progress=False, log=lambda *a: None)
    build_modalities(store, progress=False)
    import zarr

    root = zarr.open_group(str(store), mode="r")
    return np.asarray(root["modalities/joint"][:]), np.asarray(root["raw/frames"][:])


def test_twenty_moco_steps_on_real_files_lower_the_loss(real_joint):
    joint, frames = real_joint  # (12, 3, 50, 25, 2) preprocessed, (12,) header frame counts
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        rng = worker_rng(0, 1, 0)
        # Paper settings but a queue of 2 batches: the first steps compare with the random
        # initial queue (loss ~0, keys = query copies); from step 3 the queue holds real keys.
        model = PretrainModel(["joint"], queue_size=24)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def views():
            pick = rng.choice(len(joint), size=12, replace=False)
            view1 = torch.from_numpy(np.stack([augment(joint[i], rng) for i in pick]))
            view2 = torch.from_numpy(np.stack([augment(joint[i], rng) for i in pick]))
            return view1, view2, torch.from_numpy(frames[pick]).float()

        losses = step_losses(model, opt, 20, views)
    finally:
        torch.set_num_threads(threads)
    assert all(np.isfinite(losses))
    filled = losses[2:7]  # the queue holds real keys: near log(K + 1) = 3.2, nothing learnt yet
    assert np.mean(filled) == pytest.approx(np.log(25), rel=0.2), losses
    assert np.mean(losses[-5:]) < 0.9 * np.mean(filled), losses
