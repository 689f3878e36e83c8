"""Augmentation (METHOD.md §4): shapes, crop bounds, symmetric padding, shear; worker seeding."""

import numpy as np

from ikem_train.data.augment import augment, shear, shear_matrix, symmetric_pad, temporal_crop, worker_rng


def _ramp(t=50):
    # frame t holds the value t everywhere: the crop's content reveals its window
    x = np.broadcast_to(np.arange(t, dtype=np.float32)[None, :, None, None], (3, t, 25, 2))
    return np.ascontiguousarray(x)


def test_symmetric_pad_content():
    x = _ramp(50)
    padded = symmetric_pad(x, 8)
    frames = padded[0, :, 0, 0]
    assert padded.shape == (3, 66, 25, 2)
    assert frames[:8].tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    assert frames[8:58].tolist() == list(range(50))
    assert frames[58:].tolist() == [49, 48, 47, 46, 45, 44, 43, 42]


def test_temporal_crop_bounds_and_shape():
    x = _ramp(50)
    rng = np.random.default_rng(0)
    padded = symmetric_pad(x, 8)[0, :, 0, 0]
    starts = set()
    for _ in range(400):
        out = temporal_crop(x, 6, rng)
        assert out.shape == x.shape and out.dtype == x.dtype
        col = out[0, :, 0, 0]
        matches = [s for s in range(17) if np.array_equal(padded[s : s + 50], col)]
        assert matches, "crop is not a 50-frame window of the padded sequence"
        starts.add(matches[0])
    assert starts == set(range(17))  # start ~ U{0..16}, both ends reached


def test_disabled_transforms_are_copies():
    x = np.random.default_rng(1).normal(size=(3, 50, 25, 2)).astype(np.float32)
    rng = np.random.default_rng(0)
    for out in (temporal_crop(x, -1, rng), shear(x, -1, rng)):
        np.testing.assert_array_equal(out, x)
        assert out is not x


def test_zero_shear_is_identity():
    x = np.random.default_rng(2).normal(size=(3, 50, 25, 2)).astype(np.float32)
    np.testing.assert_allclose(shear(x, 0.0, np.random.default_rng(0)), x, rtol=0, atol=0)


def test_shear_matrix_layout_and_application():
    s = shear_matrix(0.5, np.random.default_rng(3))
    assert np.allclose(np.diag(s), 1) and np.all(np.abs(s - np.eye(3)) <= 0.5)
    rng = np.random.default_rng(3)
    first, second = rng.uniform(-0.5, 0.5, 3), rng.uniform(-0.5, 0.5, 3)
    a, b, c = first
    d, e, f = second
    assert np.allclose(s, [[1, a, d], [b, 1, e], [c, f, 1]])
    x = np.random.default_rng(4).normal(size=(3, 5, 25, 2)).astype(np.float32)
    out = shear(x, 0.5, np.random.default_rng(3))
    # one joint by hand: p' = S p
    np.testing.assert_allclose(out[:, 2, 7, 1], s @ x[:, 2, 7, 1], rtol=1e-5)


def test_augment_view_shape_dtype_and_randomness():
    x = np.random.default_rng(5).normal(size=(3, 50, 25, 2)).astype(np.float32)
    rng = np.random.default_rng(0)
    v1, v2 = augment(x, rng), augment(x, rng)
    assert v1.shape == x.shape and v1.dtype == np.float32
    assert not np.allclose(v1, v2)


def test_worker_streams_differ_across_epochs_and_workers():
    draws = {(e, w): worker_rng(0, e, w).integers(0, 2**31, 4).tolist() for e in (1, 2) for w in (0, 1)}
    assert len({tuple(v) for v in draws.values()}) == 4
    assert worker_rng(0, 1, 0).integers(0, 2**31, 4).tolist() == draws[(1, 0)]  # reproducible
    assert worker_rng(1, 1, 0).integers(0, 2**31, 4).tolist() != draws[(1, 0)]  # seed matters
