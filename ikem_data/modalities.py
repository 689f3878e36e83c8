"""The six IKEM modalities with numba kernels (METHOD.md §3).

From preprocessed joint sequences ``X`` (N, 3, T, 25, M) float32 metres:

- ``joint`` = X (§3.1);
- ``motion`` = tau (X[t+1] - X[t]), zero at T-1 (§3.2);
- ``acceleration`` = tau (motion[t+1] - motion[t]), zero at T-2 and T-1 (§3.3);
- ``bone`` b_v = X_v - X_u over the chosen pairs; with IKEM's pairs the root bone at
  joint 21 is the unit torso normal normalize((X_2 - X_9) x (X_5 - X_9)) (§3.4);
- ``rotation_axis`` R_v = b_v x b_parent, un-normalised (§3.5);
- ``angular_velocity`` tau (theta[t+1] - theta[t]) normalize(R_v)[t], with theta the
  angle between the unit bones, zero at T-1 and at joint 21 (§3.6).

Time scale: ``tau = 50 / frames`` with the *header* frame count of each sample (IKEM's
``true_timeline``), the reference's constant 50 whatever T is (METHOD.md §3, §11 item
14; pass ``t_ref`` to change it), or 1 when ``true_timeline`` is False. Every cross
product is taken over the channel axis explicitly (METHOD.md §11 item 4). All arithmetic
is float32 in the reference's order (it runs these in float32 torch), so results agree
with :mod:`ikem_train.modalities` to a few ulp.

``bone_pairs="crossclr"`` selects CrosSCLR/AimCLR bones (tip from thumb, zero root
bone); the rotation axis and angular velocity are then built on those bones too.
The torso normal is computed from joints; the reference computes it from bones
(b_2 - b_9) x (b_5 - b_9), which is the same number because preprocessing leaves
X_21 = 0 exactly (centring, resize, rotation and shear all keep the origin).
"""

import numpy as np
from numba import njit, prange

from ikem_data.bones import BONE_PAIRS, ROTATION_AXIS_PAIRS, SHOULDER_LEFT, SHOULDER_RIGHT, \
    SPINE_MID, SPINE_SHOULDER
from ikem_data.names import MODALITIES, resolve_modalities
from ikem_data.preprocess import SampleError, _Threads

#: Frames of the resized sequence in the reference's time scale ``tau = 50 / frames``.
T_REF = 50.0
_EPS = np.float32(1e-12)
_ZERO = np.float32(0.0)


@njit(cache=True)
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@njit(cache=True)
def _norm(x0, x1, x2):
    return np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)


@njit(cache=True)
def _unit(b, i, out):
    """out[:, i] = b[:, i] / max(|b[:, i]|, 1e-12) (torch ``F.normalize`` over channels)."""
    d = max(_norm(b[0, i], b[1, i], b[2, i]), _EPS)
    out[0, i] = b[0, i] / d
    out[1, i] = b[1, i] / d
    out[2, i] = b[2, i] / d


@njit(parallel=True, cache=True)
def _modalities_kernel(joint, tau, bone_parent, root_normal, axis_parent, want,
                       motion, accel, bone_out, axis_out, omega_out, finite):
    """All derived modalities of every sample, in parallel over samples.

    Each sample is handled as flat (3, T*V*M) arrays: element i = (t*V + v)*M + m, so
    frame t+1 is i + V*M and joint u of the same frame and body is i + (u - v)*M.
    ``want`` = (motion, acceleration, bone, rotation_axis, angular_velocity) flags; an
    output not wanted may be a dummy array and is never touched; a wanted one is written
    in full. ``finite[n]`` is set False (and nothing computed) for a sample with NaN/inf.
    """
    n_samples, _, n_t, n_v, n_m = joint.shape
    step = n_v * n_m                  # one frame
    size = n_t * step
    need_bone = want[2] or want[3] or want[4]
    for n in prange(n_samples):
        x = joint[n].reshape(3, size)
        ok = True
        for c in range(3):
            for i in range(size):
                if not np.isfinite(x[c, i]):
                    ok = False
        finite[n] = ok
        if not ok:
            continue
        k = tau[n]
        if want[0] or want[1]:
            mo = motion[n].reshape(3, size) if want[0] else np.empty((3, size), dtype=np.float32)
            for c in range(3):
                for i in range(size - step):
                    mo[c, i] = k * (x[c, i + step] - x[c, i])
                for i in range(size - step, size):
                    mo[c, i] = _ZERO
            if want[1]:
                ac = accel[n].reshape(3, size)
                for c in range(3):
                    for i in range(size - 2 * step):
                        ac[c, i] = k * (mo[c, i + step] - mo[c, i])
                    for i in range(max(size - 2 * step, 0), size):
                        ac[c, i] = _ZERO
        if not need_bone:
            continue
        b = bone_out[n].reshape(3, size) if want[2] else np.empty((3, size), dtype=np.float32)
        for t in range(n_t):
            for v in range(n_v):
                du = (bone_parent[v] - v) * n_m
                for m in range(n_m):
                    i = t * step + v * n_m + m
                    for c in range(3):
                        b[c, i] = x[c, i] - x[c, i + du]
            if root_normal:
                for m in range(n_m):
                    i = t * step + m
                    mid = i + SPINE_MID * n_m
                    right = i + SHOULDER_RIGHT * n_m
                    left = i + SHOULDER_LEFT * n_m
                    x0, x1, x2 = _cross(x[0, mid] - x[0, right], x[1, mid] - x[1, right],
                                        x[2, mid] - x[2, right], x[0, left] - x[0, right],
                                        x[1, left] - x[1, right], x[2, left] - x[2, right])
                    d = max(_norm(x0, x1, x2), _EPS)
                    root = i + SPINE_SHOULDER * n_m
                    b[0, root] = x0 / d
                    b[1, root] = x1 / d
                    b[2, root] = x2 / d
        if not (want[3] or want[4]):
            continue
        r = axis_out[n].reshape(3, size) if want[3] else np.empty((3, size), dtype=np.float32)
        for t in range(n_t):
            for v in range(n_v):
                du = (axis_parent[v] - v) * n_m
                for m in range(n_m):
                    i = t * step + v * n_m + m
                    j = i + du
                    r[0, i], r[1, i], r[2, i] = _cross(b[0, i], b[1, i], b[2, i], b[0, j], b[1, j], b[2, j])
        if not want[4]:
            continue
        unit = np.empty((3, size), dtype=np.float32)
        for i in range(size):
            _unit(b, i, unit)
        theta = np.empty(size, dtype=np.float32)
        for t in range(n_t):
            for v in range(n_v):
                du = (axis_parent[v] - v) * n_m
                for m in range(n_m):
                    i = t * step + v * n_m + m
                    j = i + du
                    s0, s1, s2 = _cross(unit[0, i], unit[1, i], unit[2, i], unit[0, j], unit[1, j], unit[2, j])
                    dot = unit[0, i] * unit[0, j] + unit[1, i] * unit[1, j] + unit[2, i] * unit[2, j]
                    theta[i] = np.arctan2(_norm(s0, s1, s2), dot)
        om = omega_out[n].reshape(3, size)
        for t in range(n_t):
            for v in range(n_v):
                for m in range(n_m):
                    i = t * step + v * n_m + m
                    if t == n_t - 1 or v == SPINE_SHOULDER:
                        om[0, i] = _ZERO
                        om[1, i] = _ZERO
                        om[2, i] = _ZERO
                        continue
                    w = k * (theta[i + step] - theta[i])
                    d = max(_norm(r[0, i], r[1, i], r[2, i]), _EPS)
                    om[0, i] = w * (r[0, i] / d)
                    om[1, i] = w * (r[1, i] / d)
                    om[2, i] = w * (r[2, i] / d)


def time_scale(frames, n, true_timeline=True, t_ref=T_REF):
    """Per-sample time scale ``tau`` (METHOD.md §3).

    Args:
        frames: (N,) header frame counts (> 0) or None (only with ``true_timeline``
            False).
        n: number of samples.
        true_timeline: False gives tau = 1.
        t_ref: numerator of tau (the reference's 50).

    Returns:
        (N,) float32 ``t_ref / frames`` computed in float32, or ones.

    Raises:
        ValueError: wrong length.
        SampleError: (a ValueError) a frame count that is not positive and finite.
    """
    if not true_timeline:
        return np.ones(n, dtype=np.float32)
    f = np.asarray(frames, dtype=np.float32).reshape(-1)
    if f.shape[0] != n:
        raise ValueError(f"frames has {f.shape[0]} entries for {n} samples")
    bad = np.flatnonzero(~(np.isfinite(f) & (f > 0)))
    if bad.size:
        raise SampleError(bad[0], f"frame count {f[bad[0]]:g} is not positive (tau = {t_ref:g} / frames)")
    return np.float32(t_ref) / f


def compute_modalities(joint, frames, names=MODALITIES, bone_pairs="ikem", true_timeline=True,
                       t_ref=T_REF, workers=None):
    """Compute modalities of preprocessed joint sequences (METHOD.md §3).

    Args:
        joint: (N, 3, T, 25, M) float32 preprocessed positions in metres (T >= 3).
        frames: (N,) header frame counts f: ``tau = t_ref / f``. Ignored (may be None)
            when ``true_timeline`` is False.
        names: modality names or a spec for :func:`ikem_data.names.resolve_modalities`
            (``"all"``, ``"joint,omega"``...).
        bone_pairs: ``"ikem"`` (reference: hand tip and thumb from the hand joint, unit
            torso normal at joint 21) or ``"crossclr"`` (CrosSCLR/AimCLR hands, zero
            root bone); used by bone, rotation_axis and angular_velocity.
        true_timeline: scale motion, acceleration and angular velocity by tau
            (reference: True); False gives tau = 1.
        t_ref: numerator of tau; the reference's constant 50 (also when T != 50).
        workers: numba threads for this call (None: numba's current setting).

    Returns:
        dict name -> (N, 3, T, 25, M) float32, in the order of ``names``. ``joint`` is a
        float32 copy of the input.

    Raises:
        ValueError: bad shape, T < 3, an unknown modality or ``bone_pairs``.
        SampleError: (a ValueError with ``.index``) NaN/inf in a sample's joints or a
            frame count that is not positive.
    """
    names = resolve_modalities(names)
    if bone_pairs not in BONE_PAIRS:
        raise ValueError(f"unknown bone_pairs {bone_pairs!r}; valid: {', '.join(BONE_PAIRS)}")
    joint = np.ascontiguousarray(joint, dtype=np.float32)
    if joint.ndim != 5 or joint.shape[1] != 3 or joint.shape[3] != 25:
        raise ValueError(f"expected joint of shape (N, 3, T, 25, M), got {joint.shape}")
    if joint.shape[2] < 3:
        raise ValueError(f"need at least 3 frames (acceleration), got T = {joint.shape[2]}")
    n = joint.shape[0]
    tau = time_scale(frames, n, true_timeline, t_ref)
    order = ("motion", "acceleration", "bone", "rotation_axis", "angular_velocity")
    want = np.array([name in names for name in order], dtype=np.bool_)
    outputs = {}
    for name, wanted in zip(order, want):
        shape = joint.shape if wanted else (1, 3, 1, 25, 1)
        outputs[name] = np.empty(shape, dtype=np.float32)
    finite = np.ones(n, dtype=np.bool_)
    with _Threads(workers):
        _modalities_kernel(joint, tau, BONE_PAIRS[bone_pairs][:, 1].copy(), bone_pairs == "ikem",
                           ROTATION_AXIS_PAIRS[:, 1].copy(), want, outputs["motion"],
                           outputs["acceleration"], outputs["bone"], outputs["rotation_axis"],
                           outputs["angular_velocity"], finite)
    if not finite.all():
        raise SampleError(np.flatnonzero(~finite)[0], "NaN or inf in the joint positions")
    outputs["joint"] = joint.copy()
    return {name: outputs[name] for name in names}
