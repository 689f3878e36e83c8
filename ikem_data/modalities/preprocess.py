"""IKEM preprocessing of raw NTU skeletons: valid length, centring, resize, y-alignment.

Pure-array functions over ``(N, 3, T, V, M)`` float32 camera-space metres (V = 25 joints
in the Kinect v2 layout; the joints used come from :mod:`ikem_data.layouts`); the store
stage (:mod:`ikem_data.modalities.stage`) runs them chunk by chunk. Source:
``METHOD.md §2`` (steps 2 to 6) and ``§11`` items 7 and 8.

Numerics follow the reference step by step so that the defaults reproduce it to float32
precision: centring in float32, the resize in float32 with OpenCV ``INTER_LINEAR``'s
coefficients (rows clamped at the edges; weights computed in float64 and rounded to
float32, which matches OpenCV 5 to 2 ulp; OpenCV 4 rounds the source position to float32
first, which moves a weight by up to ulp(L), i.e. < 1e-6 m on real motion), the alignment angle
in float32 (``arccos`` in degrees and back, as the reference does) and the rotation
itself in float64, rounded once to float32. The sign of the angle sums ``s_t.z`` in
float32 in numpy's pairwise order, because a sum near zero flips a whole sequence.
"""

import math

import numpy as np
from numba import njit, prange

from ikem_data.layouts import get_layout

ROTATION_SIGNS = ("sequence", "per_frame")


class SampleError(ValueError):
    """Bad input in one sample; ``index`` is its position in the batch, ``reason`` why."""

    def __init__(self, index, reason):
        super().__init__(f"sample {index}: {reason}")
        self.index = int(index)
        self.reason = reason

ON_EMPTY = ("error", "skip")

#: Per-sample status codes returned by the kernel.
STATUS_OK, STATUS_EMPTY, STATUS_NONFINITE = 0, 1, 2

_F32_EPS_NORM = np.float32(1e-4)
_F32_RAD2DEG = np.float32(180.0 / math.pi)
_F32_PI = np.float32(math.pi)
_F32_180 = np.float32(180.0)


@njit(cache=True, error_model="numpy")
def _pairwise_block_f32(a, start, n):
    """numpy's float32 pairwise-sum leaf (n <= 128): 8 accumulators, then the rest."""
    if n < 8:
        res = np.float32(0.0)
        for i in range(start, start + n):
            res += a[i]
        return res
    r = np.empty(8, dtype=np.float32)
    for j in range(8):
        r[j] = a[start + j]
    i = 8
    while i < n - (n % 8):
        for j in range(8):
            r[j] += a[start + i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[start + i]
        i += 1
    return res


def _split(n):
    half = n // 2
    return half - half % 8


# numpy splits blocks above 128 in two (sizes rounded to 8). Written as explicit levels
# because numba's on-disk cache crashes on recursive functions; beyond 1024 values the
# sum falls back to plain float32 accumulation (t_length > 1024 is far from any use).
_split_nb = njit(cache=True)(_split)


@njit(cache=True, error_model="numpy")
def _pairwise_256(a, start, n):
    if n <= 128:
        return _pairwise_block_f32(a, start, n)
    h = _split_nb(n)
    return _pairwise_block_f32(a, start, h) + _pairwise_block_f32(a, start + h, n - h)


@njit(cache=True, error_model="numpy")
def _pairwise_512(a, start, n):
    if n <= 256:
        return _pairwise_256(a, start, n)
    h = _split_nb(n)
    return _pairwise_256(a, start, h) + _pairwise_256(a, start + h, n - h)


@njit(cache=True, error_model="numpy")
def _pairwise_sum_f32(a, start, n):
    """Sum ``a[start:start+n]`` in float32 in numpy's pairwise order (n <= 1024)."""
    if n <= 512:
        return _pairwise_512(a, start, n)
    if n <= 1024:
        h = _split_nb(n)
        return _pairwise_512(a, start, h) + _pairwise_512(a, start + h, n - h)
    res = np.float32(0.0)
    for i in range(start, start + n):
        res += a[i]
    return res


@njit(cache=True, error_model="numpy")
def _numpy_sum_f32(a):
    """``np.sum`` of a contiguous float32 vector, bit for bit (pairwise order)."""
    return _pairwise_sum_f32(a, 0, a.shape[0])


_EXPONENT = np.uint32(0x7F800000)


@njit(cache=True, error_model="numpy")
def all_finite(a):
    """True when no element of the contiguous 1-D float32 array ``a`` is NaN or inf.

    Integer form: an element is non-finite iff its exponent bits are all ones, so the
    test is one max-reduction over the bit patterns, which vectorizes (a float
    ``isfinite`` branch per element does not).
    """
    bits = a.view(np.uint32)
    top = np.uint32(0)
    for i in range(bits.shape[0]):
        top = max(top, bits[i] & _EXPONENT)
    return top != _EXPONENT


@njit(cache=True, error_model="numpy")
def _valid_length_one(xyz, n, base):
    count = 0
    for t in range(xyz.shape[2]):
        s = abs(xyz[n, 0, t, base, 0]) + abs(xyz[n, 1, t, base, 0]) + abs(xyz[n, 2, t, base, 0])
        if s != 0:
            count += 1
    return count


@njit(parallel=True, cache=True)
def _valid_length_kernel(xyz, base, out):
    for n in prange(xyz.shape[0]):
        out[n] = _valid_length_one(xyz, n, base)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _preprocess_kernel(xyz, t_out, align, per_frame_sign, base, center, left, right, joint, lengths, status):
    """Steps 2-5 of METHOD.md §2 for every sample, in parallel over samples (joint indices
    from the layout: ``base`` decides valid frames, ``center`` centres each body, the
    shoulders ``left`` and ``right`` align it)."""
    n_samples, n_c, t_max, n_v, n_m = xyz.shape
    for n in prange(n_samples):
        # The finite check streams the whole sample through the cache once; the valid
        # length and the resize then read it from there.
        finite = all_finite(xyz[n].reshape(n_c * t_max * n_v * n_m))
        length = _valid_length_one(xyz, n, base)
        lengths[n] = length
        status[n] = STATUS_NONFINITE if not finite else STATUS_OK if length else STATUS_EMPTY
        if status[n] != STATUS_OK:
            joint[n] = 0
            continue

        # OpenCV INTER_LINEAR row coefficients: half-pixel centres, weights computed in
        # float64 and rounded to float32, source rows clamped to [0, L-1] (the weight
        # itself is not clamped, so edge rows mix a row with itself).
        scale = 1.0 / (t_out / length)
        row0 = np.empty(t_out, dtype=np.int64)
        row1 = np.empty(t_out, dtype=np.int64)
        beta0 = np.empty(t_out, dtype=np.float32)
        beta1 = np.empty(t_out, dtype=np.float32)
        for i in range(t_out):
            fy = (i + 0.5) * scale - 0.5
            sy = math.floor(fy)
            fy = fy - sy
            beta0[i] = np.float32(1.0 - fy)
            beta1[i] = np.float32(fy)
            row0[i] = min(max(sy, 0), length - 1)
            row1[i] = min(max(sy + 1, 0), length - 1)

        vz = np.empty(t_out, dtype=np.float32)
        cos_t = np.empty(t_out, dtype=np.float64)
        sin_t = np.empty(t_out, dtype=np.float64)
        for m in range(n_m):
            # Centre on this body's own spine-shoulder (float32), then resize.
            for c in range(n_c):
                for i in range(t_out):
                    r0 = row0[i]
                    r1 = row1[i]
                    for v in range(n_v):
                        s0 = xyz[n, c, r0, v, m] - xyz[n, c, r0, center, m]
                        s1 = xyz[n, c, r1, v, m] - xyz[n, c, r1, center, m]
                        joint[n, c, i, v, m] = s0 * beta0[i] + s1 * beta1[i]
            if not align:
                continue
            # Per-frame y-axis alignment of the shoulder vector (angle in float32).
            for i in range(t_out):
                sx = joint[n, 0, i, right, m] - joint[n, 0, i, left, m]
                sz = joint[n, 2, i, right, m] - joint[n, 2, i, left, m]
                vz[i] = sz
                norm = np.sqrt((sx * sx + np.float32(0.0)) + sz * sz)
                c_t = sx / (norm + _F32_EPS_NORM)
                deg = np.arccos(c_t) * _F32_RAD2DEG
                if per_frame_sign and sz >= 0:
                    deg = -deg
                rad = deg * _F32_PI / _F32_180
                cos_t[i] = np.float64(np.cos(rad))
                sin_t[i] = np.float64(np.sin(rad))
            if not per_frame_sign and _numpy_sum_f32(vz) >= 0:
                for i in range(t_out):
                    sin_t[i] = -sin_t[i]  # theta -> -theta: cos unchanged, sin negated
            for i in range(t_out):
                ct = cos_t[i]
                st = sin_t[i]
                for v in range(n_v):
                    x = np.float64(joint[n, 0, i, v, m])
                    z = np.float64(joint[n, 2, i, v, m])
                    joint[n, 0, i, v, m] = np.float32(ct * x - st * z)
                    joint[n, 2, i, v, m] = np.float32(st * x + ct * z)


def _check_xyz(xyz, layout):
    xyz = np.asarray(xyz)
    v = layout.num_joints
    if xyz.ndim != 5 or xyz.shape[1] != 3 or xyz.shape[3] != v:
        raise ValueError(f"expected xyz of shape (N, 3, T, {v}, M) for layout {layout.name}, got {xyz.shape}")
    return np.ascontiguousarray(xyz, dtype=np.float32)


class _Threads:
    """Context manager: run numba kernels with ``workers`` threads (None: unchanged)."""

    def __init__(self, workers):
        self.workers = workers
        self.previous = None

    def __enter__(self):
        if self.workers is not None:
            import numba

            if int(self.workers) < 1:
                raise ValueError(f"workers must be >= 1, got {self.workers}")
            self.previous = numba.get_num_threads()
            numba.set_num_threads(min(int(self.workers), numba.config.NUMBA_NUM_THREADS))
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            import numba

            numba.set_num_threads(self.previous)
        return False


def valid_length(xyz, layout=None):
    """Valid length L per sample (METHOD.md §2 step 2, §11 item 8).

    L counts the frames t whose body-0 base joint (Kinect v2: joint 1, index 0) has
    ``|x|+|y|+|z| != 0``: a count, not "last valid index + 1", used as a prefix length by
    the resize.

    Args:
        xyz: (N, 3, T, V, M) float32 raw camera-space metres, zero-padded.
        layout: skeleton layout name or :class:`~ikem_data.layouts.Layout` (None: Kinect v2).

    Returns:
        (N,) int32 counts in ``[0, T]``.

    Raises:
        ValueError: xyz is not (N, 3, T, V, M) for the layout; an unknown layout.
    """
    layout = get_layout(layout)
    xyz = _check_xyz(xyz, layout)
    out = np.zeros(xyz.shape[0], dtype=np.int32)
    _valid_length_kernel(xyz, layout.base, out)
    return out


def check_params(t_length, rotation_sign, on_empty):
    """Validate the preprocessing switches.

    Raises:
        ValueError: an unknown ``rotation_sign`` or ``on_empty``, or ``t_length`` not an
            integer >= 3 (acceleration needs 3 frames).
    """
    if rotation_sign not in ROTATION_SIGNS:
        raise ValueError(f"unknown rotation_sign {rotation_sign!r}; valid: {', '.join(ROTATION_SIGNS)}")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"unknown on_empty {on_empty!r}; valid: {', '.join(ON_EMPTY)}")
    if int(t_length) != t_length or t_length < 3:
        raise ValueError(f"t_length must be an integer >= 3 (acceleration needs 3 frames), got {t_length}")


def preprocess(xyz, t_length=50, rotation_sign="sequence", workers=None, on_empty="error", align=True,
               out=None, layout=None):
    """IKEM preprocessing of raw sequences (METHOD.md §2 steps 2-6).

    Per sample: valid length L; each body centred on its own centre joint (Kinect v2:
    joint 21, index 20); the first L frames resized to ``t_length`` frames with OpenCV
    ``INTER_LINEAR`` (half-pixel centres; body 1 uses body 0's L; L < t_length
    upsamples); then per frame the shoulder vector (right minus left shoulder, joints 9
    and 5 in Kinect v2, y zeroed) is turned onto +x by a rotation about y. Absent bodies
    stay zero. The joints come from ``layout`` (:mod:`ikem_data.layouts`).

    Args:
        xyz: (N, 3, T, V, M) float32 raw camera-space metres, zero-padded.
        t_length: output frames (>= 3; 50 in the reference).
        rotation_sign: ``"sequence"`` (reference: the sign of the angle is decided once
            per sequence from the float32 sum of ``s_t.z``, so frames of the opposite
            sign are mis-rotated, METHOD.md §11 item 7) or ``"per_frame"`` (the fix:
            the sign of each frame's own ``s_t.z``).
        workers: numba threads for this call (None: numba's current setting).
        on_empty: what a sample with L = 0 becomes: ``"error"`` raises; ``"skip"``
            leaves its output all zeros with valid length 0 (the caller records it).
        align: apply the y-axis alignment (step 5; the reference's ``y_rotation=True``).
        out: optional C-contiguous float32 array of the output shape to write the joints
            into (a reused buffer); every element is written.
        layout: skeleton layout name or :class:`~ikem_data.layouts.Layout` (None: Kinect v2).

    Returns:
        ``(joint, valid_length)``: (N, 3, t_length, V, M) float32 metres and (N,) int32.

    Raises:
        ValueError: bad shape, ``t_length < 3``, an unknown ``rotation_sign`` or
            ``on_empty``, an ``out`` of the wrong shape, dtype or layout.
        SampleError: (a ValueError) NaN/inf anywhere in a sample, or
            (``on_empty="error"``) a sample with no valid frame; ``.index`` is the first
            such sample.
    """
    check_params(t_length, rotation_sign, on_empty)
    t_length = int(t_length)
    layout = get_layout(layout)
    xyz = _check_xyz(xyz, layout)
    n, _, _, v, m = xyz.shape
    shape = (n, 3, t_length, v, m)
    if out is None:
        joint = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got {out.dtype} {out.shape}")
    else:
        joint = out
    lengths = np.zeros(n, dtype=np.int32)
    status = np.zeros(n, dtype=np.int8)
    with _Threads(workers):
        _preprocess_kernel(xyz, t_length, bool(align), rotation_sign == "per_frame", layout.base, layout.center,
                           *layout.shoulders, joint, lengths, status)
    bad = np.flatnonzero(status == STATUS_NONFINITE)
    if bad.size:
        raise SampleError(bad[0], f"NaN or inf in the input coordinates ({bad.size} sample(s) affected)")
    empty = np.flatnonzero(status == STATUS_EMPTY)
    if empty.size and on_empty == "error":
        raise SampleError(empty[0], f"no valid frame (body 0's base joint is zero in every frame, L = 0; "
                                    f"{empty.size} sample(s) affected)")
    return joint, lengths
