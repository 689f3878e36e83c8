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


@njit(parallel=True, cache=True)
def _modalities_kernel(joint, tau, bone_parent, root_normal, axis_parent, want,
                       motion, accel, bone_out, axis_out, omega_out):
    """All derived modalities of every sample, in parallel over samples.

    ``want`` = (motion, acceleration, bone, rotation_axis, angular_velocity) flags; an
    output not wanted may be a dummy array and is never touched.
    """
    n_samples, _, n_t, n_v, n_m = joint.shape
    need_bone = want[2] or want[3] or want[4]
    for n in prange(n_samples):
        k = tau[n]
        # Motion and acceleration (the same float32 operations as the reference).
        if want[0] or want[1]:
            mo = np.zeros((3, n_t, n_v, n_m), dtype=np.float32)
            for c in range(3):
                for t in range(n_t - 1):
                    for v in range(n_v):
                        for m in range(n_m):
                            mo[c, t, v, m] = k * (joint[n, c, t + 1, v, m] - joint[n, c, t, v, m])
            if want[0]:
                motion[n] = mo
            if want[1]:
                for c in range(3):
                    for t in range(n_t):
                        for v in range(n_v):
                            for m in range(n_m):
                                if t < n_t - 2:
                                    accel[n, c, t, v, m] = k * (mo[c, t + 1, v, m] - mo[c, t, v, m])
                                else:
                                    accel[n, c, t, v, m] = _ZERO
        if not need_bone:
            continue
        b = np.empty((3, n_t, n_v, n_m), dtype=np.float32)
        for m in range(n_m):
            for t in range(n_t):
                for v in range(n_v):
                    u = bone_parent[v]
                    for c in range(3):
                        b[c, t, v, m] = joint[n, c, t, v, m] - joint[n, c, t, u, m]
                if root_normal:
                    a0 = joint[n, 0, t, SPINE_MID, m] - joint[n, 0, t, SHOULDER_RIGHT, m]
                    a1 = joint[n, 1, t, SPINE_MID, m] - joint[n, 1, t, SHOULDER_RIGHT, m]
                    a2 = joint[n, 2, t, SPINE_MID, m] - joint[n, 2, t, SHOULDER_RIGHT, m]
                    c0 = joint[n, 0, t, SHOULDER_LEFT, m] - joint[n, 0, t, SHOULDER_RIGHT, m]
                    c1 = joint[n, 1, t, SHOULDER_LEFT, m] - joint[n, 1, t, SHOULDER_RIGHT, m]
                    c2 = joint[n, 2, t, SHOULDER_LEFT, m] - joint[n, 2, t, SHOULDER_RIGHT, m]
                    x0, x1, x2 = _cross(a0, a1, a2, c0, c1, c2)
                    d = max(_norm(x0, x1, x2), _EPS)
                    b[0, t, SPINE_SHOULDER, m] = x0 / d
                    b[1, t, SPINE_SHOULDER, m] = x1 / d
                    b[2, t, SPINE_SHOULDER, m] = x2 / d
        if want[2]:
            bone_out[n] = b
        if not (want[3] or want[4]):
            continue
        r = np.empty((3, n_t, n_v, n_m), dtype=np.float32)
        for m in range(n_m):
            for t in range(n_t):
                for v in range(n_v):
                    u = axis_parent[v]
                    r[0, t, v, m], r[1, t, v, m], r[2, t, v, m] = _cross(
                        b[0, t, v, m], b[1, t, v, m], b[2, t, v, m],
                        b[0, t, u, m], b[1, t, u, m], b[2, t, u, m])
        if want[3]:
            axis_out[n] = r
        if not want[4]:
            continue
        theta = np.empty((n_t, n_v, n_m), dtype=np.float32)
        for m in range(n_m):
            for t in range(n_t):
                for v in range(n_v):
                    u = axis_parent[v]
                    dv = max(_norm(b[0, t, v, m], b[1, t, v, m], b[2, t, v, m]), _EPS)
                    du = max(_norm(b[0, t, u, m], b[1, t, u, m], b[2, t, u, m]), _EPS)
                    p0, p1, p2 = b[0, t, v, m] / dv, b[1, t, v, m] / dv, b[2, t, v, m] / dv
                    q0, q1, q2 = b[0, t, u, m] / du, b[1, t, u, m] / du, b[2, t, u, m] / du
                    s0, s1, s2 = _cross(p0, p1, p2, q0, q1, q2)
                    theta[t, v, m] = np.arctan2(_norm(s0, s1, s2), p0 * q0 + p1 * q1 + p2 * q2)
        for m in range(n_m):
            for t in range(n_t):
                for v in range(n_v):
                    if t == n_t - 1 or v == SPINE_SHOULDER:
                        for c in range(3):
                            omega_out[n, c, t, v, m] = _ZERO
                        continue
                    w = k * (theta[t + 1, v, m] - theta[t, v, m])
                    d = max(_norm(r[0, t, v, m], r[1, t, v, m], r[2, t, v, m]), _EPS)
                    for c in range(3):
                        omega_out[n, c, t, v, m] = w * (r[c, t, v, m] / d)


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
    finite = np.isfinite(joint).reshape(joint.shape[0], -1).all(axis=1)
    if not finite.all():
        raise SampleError(np.flatnonzero(~finite)[0], "NaN or inf in the joint positions")
    n = joint.shape[0]
    tau = time_scale(frames, n, true_timeline, t_ref)
    order = ("motion", "acceleration", "bone", "rotation_axis", "angular_velocity")
    want = np.array([name in names for name in order], dtype=np.bool_)
    outputs = {}
    for name, wanted in zip(order, want):
        shape = joint.shape if wanted else (1, 3, 1, 25, 1)
        outputs[name] = np.zeros(shape, dtype=np.float32)
    with _Threads(workers):
        _modalities_kernel(joint, tau, BONE_PAIRS[bone_pairs][:, 1].copy(), bone_pairs == "ikem",
                           ROTATION_AXIS_PAIRS[:, 1].copy(), want, outputs["motion"],
                           outputs["acceleration"], outputs["bone"], outputs["rotation_axis"],
                           outputs["angular_velocity"])
    outputs["joint"] = joint.copy()
    return {name: outputs[name] for name in names}
