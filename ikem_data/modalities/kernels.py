"""The six IKEM modalities with numba kernels (METHOD.md §3).

From preprocessed joint sequences ``X`` (N, 3, T, V, M) float32 metres (joint numbers
below are the Kinect v2 layout's; every joint index comes from :mod:`ikem_data.layouts`):

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
with :mod:`ikem_train.data.device_modalities` to a few ulp.

``bone_pairs="crossclr"`` selects CrosSCLR/AimCLR bones (tip from thumb, zero root
bone); the rotation axis and angular velocity are then built on those bones too.
The torso normal is computed from joints; the reference computes it from bones
(b_2 - b_9) x (b_5 - b_9), which is the same number because preprocessing leaves
X_21 = 0 exactly (centring, resize, rotation and shear all keep the origin).
"""

import math

import numpy as np
from numba import njit, prange

from ikem_data.layouts import NORMAL_ROOT_BONE_SETS, get_layout
from ikem_data.names import MODALITIES, resolve_modalities
from ikem_data.modalities.preprocess import SampleError, _Threads, all_finite

#: Frames of the resized sequence in the reference's time scale ``tau = 50 / frames``.
T_REF = 50.0
_EPS = np.float32(1e-12)
_ZERO = np.float32(0.0)

#: atan(r) / r = P(r^2) for r in [0, tan(pi/8)]: least-squares fit of degree 7 in r^2 on
#: 20,000 Chebyshev nodes, evaluated in float64. Its largest relative error, 7.3e-13, is
#: far below half a float32 ulp (3e-8), so theta rounds to the float32 nearest the exact
#: angle except at rare near-ties (then 1 ulp off); tests check it against np.arctan2.
_ATAN_POLY = (0.9999999999992711, -0.3333333327838429, 0.19999993188885412, -0.14285391259732438,
              0.11103534926082487, -0.08993217399539553, 0.06977005874360516, -0.03770175067322333)
_TAN_PI_8 = math.tan(math.pi / 8)
_TINY = 1e-300


@njit(cache=True, inline="always", error_model="numpy")
def atan2_f64(y, x):
    """``atan2(y, x)`` in radians, in [0, pi], for float64 ``y >= 0`` (a norm) and any
    finite ``x``: the bone angle theta of METHOD.md §3.6. Written without branches or
    calls so that loops over it vectorize (the libm call was half the kernel's time).
    Signed zeros follow IEEE atan2: ``atan2(0, -0.0) = pi``. No errors are raised; NaN
    or inf inputs give meaningless angles (callers check finiteness first).

    Octant reduction: r = min/max of (|x|, y) in [0, 1]; above tan(pi/8), atan(r) =
    pi/4 + atan((r - 1) / (r + 1)); then pi/2 - a when y > |x|, and pi - a when x < 0.
    """
    ax = abs(x)
    r = min(ax, y) / max(ax, y, _TINY)
    high = r > _TAN_PI_8
    r = (r - 1.0) / (r + 1.0) if high else r
    s = r * r
    p = _ATAN_POLY[7]
    p = p * s + _ATAN_POLY[6]
    p = p * s + _ATAN_POLY[5]
    p = p * s + _ATAN_POLY[4]
    p = p * s + _ATAN_POLY[3]
    p = p * s + _ATAN_POLY[2]
    p = p * s + _ATAN_POLY[1]
    p = p * s + _ATAN_POLY[0]
    a = r * p + (math.pi / 4 if high else 0.0)
    a = math.pi / 2 - a if y > ax else a
    return math.pi - a if math.copysign(1.0, x) < 0 else a


@njit(cache=True, error_model="numpy")
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@njit(cache=True, error_model="numpy")
def _norm(x0, x1, x2):
    return np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)


@njit(cache=True, error_model="numpy")
def _unit(a, i, out):
    """out[:, i] = a[:, i] / max(|a[:, i]|, 1e-12) (torch ``F.normalize`` over channels)."""
    d = max(_norm(a[0, i], a[1, i], a[2, i]), _EPS)
    out[0, i] = a[0, i] / d
    out[1, i] = a[1, i] / d
    out[2, i] = a[2, i] / d


@njit(cache=True, error_model="numpy")
def _differences(x, k, out, frame, zero_frames):
    """out[:, i] = k (x[:, i + frame] - x[:, i]), zero in the last ``zero_frames`` frames
    (motion: 1, §3.2; acceleration from motion: 2, §3.3)."""
    size = x.shape[1]
    stop = max(size - zero_frames * frame, 0)
    for c in range(3):
        for i in range(stop):
            out[c, i] = k * (x[c, i + frame] - x[c, i])
        for i in range(stop, size):
            out[c, i] = _ZERO


@njit(cache=True, error_model="numpy")
def _bones(x, src, normal, n_m, out):
    """out[:, i] = x[:, i] - x[:, parent]; with ``normal`` = (mid, left, right, centre)
    joints, the torso normal at the centre joint (§3.4); an empty ``normal``: none."""
    frame = src.shape[0]
    for c in range(3):
        for base in range(0, x.shape[1], frame):
            for j in range(frame):
                out[c, base + j] = x[c, base + j] - x[c, np.uint64(base) + src[j]]
    if normal.shape[0] == 0:
        return
    for base in range(0, x.shape[1], frame):
        for m in range(n_m):
            mid, right, left = base + normal[0] * n_m + m, base + normal[2] * n_m + m, base + normal[1] * n_m + m
            x0, x1, x2 = _cross(x[0, mid] - x[0, right], x[1, mid] - x[1, right], x[2, mid] - x[2, right],
                                x[0, left] - x[0, right], x[1, left] - x[1, right], x[2, left] - x[2, right])
            d = max(_norm(x0, x1, x2), _EPS)
            root = base + normal[3] * n_m + m
            out[0, root] = x0 / d
            out[1, root] = x1 / d
            out[2, root] = x2 / d


@njit(cache=True, error_model="numpy")
def _gather(a, src, out):
    """out[:, i] = a[:, parent of i] in every frame. The one scattered read: the loops
    that use it run over contiguous arrays and vectorize."""
    frame = src.shape[0]
    for c in range(3):
        for base in range(0, a.shape[1], frame):
            for j in range(frame):
                out[c, base + j] = a[c, np.uint64(base) + src[j]]


@njit(cache=True, error_model="numpy")
def _axes(b, parent, out):
    """out[:, i] = b[:, i] x b_parent[:, i], un-normalised (§3.5)."""
    for i in range(b.shape[1]):
        out[0, i], out[1, i], out[2, i] = _cross(b[0, i], b[1, i], b[2, i], parent[0, i], parent[1, i], parent[2, i])


@njit(cache=True, error_model="numpy")
def _angular_velocity(b, parent, r, k, frame, n_m, center, out):
    """tau (theta[t+1] - theta[t]) normalize(R)[t]; zero at T-1 and at the centre joint (§3.6).
    ``parent`` holds each bone's parent bone (:func:`_gather`)."""
    size = b.shape[1]
    unit = np.empty((3, size), dtype=np.float32)
    up = np.empty((3, size), dtype=np.float32)
    for i in range(size):
        _unit(b, i, unit)
        _unit(parent, i, up)
    sine = np.empty(size, dtype=np.float32)  # |u x u_parent|
    cosine = np.empty(size, dtype=np.float32)  # u . u_parent
    for i in range(size):
        s0, s1, s2 = _cross(unit[0, i], unit[1, i], unit[2, i], up[0, i], up[1, i], up[2, i])
        sine[i] = _norm(s0, s1, s2)
        cosine[i] = unit[0, i] * up[0, i] + unit[1, i] * up[1, i] + unit[2, i] * up[2, i]
    theta = np.empty(size, dtype=np.float32)
    for i in range(size):
        theta[i] = np.float32(atan2_f64(np.float64(sine[i]), np.float64(cosine[i])))
    for i in range(size - frame):
        w = k * (theta[i + frame] - theta[i])
        d = max(_norm(r[0, i], r[1, i], r[2, i]), _EPS)
        out[0, i] = w * (r[0, i] / d)
        out[1, i] = w * (r[1, i] / d)
        out[2, i] = w * (r[2, i] / d)
    for c in range(3):
        for i in range(size - frame, size):
            out[c, i] = _ZERO
        for base in range(0, size, frame):
            for m in range(n_m):
                out[c, base + center * n_m + m] = _ZERO


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _modalities_kernel(joint, tau, bone_src, normal, axis_src, center, want,
                       motion, accel, bone_out, axis_out, omega_out, finite):
    """All derived modalities of every sample, in parallel over samples.

    Each sample is handled as flat (3, T*V*M) arrays: element i = (t*V + v)*M + m, so
    frame t+1 is i + V*M. ``bone_src[j]`` / ``axis_src[j]`` give, for element j = v*M + m
    of a frame, the element of the parent joint u of the same body. ``want`` =
    (motion, acceleration, bone, rotation_axis, angular_velocity) flags; ``normal`` and
    ``center`` are the layout's torso-normal and centre joints (see :func:`_bones`); an output not
    wanted may be a dummy array and is never touched; a wanted one is written in full.
    ``finite[n]`` is set False (and nothing computed) for a sample with NaN/inf.
    """
    n_samples, _, n_t, n_v, n_m = joint.shape
    frame = n_v * n_m
    size = n_t * frame
    for n in prange(n_samples):
        finite[n] = all_finite(joint[n].reshape(3 * size))
        if not finite[n]:
            continue
        x = joint[n].reshape(3, size)
        k = tau[n]
        if want[0] or want[1]:
            mo = motion[n].reshape(3, size) if want[0] else np.empty((3, size), dtype=np.float32)
            _differences(x, k, mo, frame, 1)
            if want[1]:
                _differences(mo, k, accel[n].reshape(3, size), frame, 2)
        if not (want[2] or want[3] or want[4]):
            continue
        b = bone_out[n].reshape(3, size) if want[2] else np.empty((3, size), dtype=np.float32)
        _bones(x, bone_src, normal, n_m, b)
        if not (want[3] or want[4]):
            continue
        r = axis_out[n].reshape(3, size) if want[3] else np.empty((3, size), dtype=np.float32)
        parent = np.empty((3, size), dtype=np.float32)
        _gather(b, axis_src, parent)
        _axes(b, parent, r)
        if want[4]:
            _angular_velocity(b, parent, r, k, frame, n_m, center, omega_out[n].reshape(3, size))


def _frame_sources(pairs, n_m):
    """Parent element of each element j = v*M + m of a frame: pairs[v, 1]*M + m.

    Unsigned, so that numba's gathers through it skip the negative-index wraparound
    (a third faster).
    """
    return (pairs[:, 1][:, None] * n_m + np.arange(n_m)).reshape(-1).astype(np.uint64)


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
                       t_ref=T_REF, workers=None, out=None, layout=None):
    """Compute modalities of preprocessed joint sequences (METHOD.md §3).

    Args:
        joint: (N, 3, T, V, M) float32 preprocessed positions in metres (T >= 3).
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
        out: optional dict name -> C-contiguous float32 array of joint's shape to write
            into instead of new arrays (reused buffers for chunked stores). ``out["joint"]``
            may be ``joint`` itself; then it is not copied.
        layout: skeleton layout name or :class:`~ikem_data.layouts.Layout` (None: Kinect
            v2): its bone and rotation-axis pairs, torso and centre joints.

    Returns:
        dict name -> (N, 3, T, V, M) float32, in the order of ``names``. ``joint`` is a
        float32 copy of the input (or ``out["joint"]``).

    Raises:
        ValueError: bad shape, T < 3, an unknown modality, ``bone_pairs`` or layout, an
            ``out`` array of the wrong shape, dtype or memory layout.
        SampleError: (a ValueError with ``.index``) NaN/inf in a sample's joints or a
            frame count that is not positive.
    """
    names = resolve_modalities(names)
    layout = get_layout(layout)
    pairs = layout.bones(bone_pairs)
    joint = np.ascontiguousarray(joint, dtype=np.float32)
    v = layout.num_joints
    if joint.ndim != 5 or joint.shape[1] != 3 or joint.shape[3] != v:
        raise ValueError(f"expected joint of shape (N, 3, T, {v}, M) for layout {layout.name}, got {joint.shape}")
    if joint.shape[2] < 3:
        raise ValueError(f"need at least 3 frames (acceleration), got T = {joint.shape[2]}")
    n, n_m = joint.shape[0], joint.shape[4]
    tau = time_scale(frames, n, true_timeline, t_ref)
    outputs = {name: _output(out, name, joint.shape) for name in names}
    order = ("motion", "acceleration", "bone", "rotation_axis", "angular_velocity")
    dummy = np.empty((1, 3, 1, v, 1), dtype=np.float32)
    finite = np.ones(n, dtype=np.bool_)
    normal = np.array([*layout.torso, layout.center] if bone_pairs in NORMAL_ROOT_BONE_SETS else [], dtype=np.int64)
    with _Threads(workers):
        _modalities_kernel(joint, tau, _frame_sources(pairs, n_m), normal, _frame_sources(layout.axis_pairs, n_m),
                           layout.center,
                           np.array([name in names for name in order], dtype=np.bool_),
                           *[outputs.get(name, dummy) for name in order], finite)
    if not finite.all():
        raise SampleError(np.flatnonzero(~finite)[0], "NaN or inf in the joint positions")
    if "joint" in outputs and outputs["joint"] is not joint:
        np.copyto(outputs["joint"], joint)
    return outputs


def _output(out, name, shape):
    """``out[name]`` checked against ``shape``, or a new float32 array."""
    if out is None or name not in out:
        return np.empty(shape, dtype=np.float32)
    array = out[name]
    if array.shape != shape or array.dtype != np.float32 or not array.flags.c_contiguous:
        raise ValueError(f"out[{name!r}] must be a C-contiguous float32 array of shape {shape}, "
                         f"got {array.dtype} {array.shape}")
    return array
