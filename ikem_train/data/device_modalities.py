"""The six modalities in torch, per batch, on the training device (METHOD.md §3).

Same formulas as the numba kernels of :mod:`ikem_data.modalities.kernels`; pretraining calls
this on the *augmented* joint sequences (DESIGN.md §4). Every cross product names its
channel axis (``dim=1``), so a batch of 3 samples is handled correctly (METHOD.md §11.4).
"""

import torch
import torch.nn.functional as F

from ikem_data.layouts import NORMAL_ROOT_BONE_SETS, get_layout
from ikem_data.names import resolve_modalities

#: Frames of the resized sequences: the time scale is ``tau = RESIZED_FRAMES / frames``.
RESIZED_FRAMES = 50.0
_EPS = 1e-12

# Which modalities each one needs computed first.
_NEEDS = {
    "joint": (), "motion": (), "bone": (), "acceleration": ("motion",),
    "rotation_axis": ("bone",), "angular_velocity": ("bone", "rotation_axis"),
}


def _time_diff(x, tau):
    """``tau * (x[:, :, t+1] - x[:, :, t])`` for t < T-1 and 0 at T-1 (METHOD.md §3.2)."""
    out = torch.zeros_like(x)
    out[:, :, :-1] = tau * (x[:, :, 1:] - x[:, :, :-1])
    return out


# (id(layout), what, device) -> (layout, index tensor): each layout's index arrays are
# copied to a device once, not every step (a host-to-device copy waits for the device).
# The layout itself is kept in the entry, so its id cannot be reused while cached.
_INDEX_CACHE = {}


def _index(layout, what, array, device):
    key = (id(layout), what, str(device))
    cached = _INDEX_CACHE.get(key)
    if cached is None or cached[0] is not layout:
        cached = _INDEX_CACHE[key] = (layout, torch.as_tensor(array, device=device))
    return cached[1]


def _bones(joint, bone_pairs, layout):
    pairs = _index(layout, f"bones/{bone_pairs}", layout.bones(bone_pairs), joint.device)
    bone = joint - joint[:, :, :, pairs[:, 1]]  # b_v = X_v - X_u; row v is joint v
    if bone_pairs in NORMAL_ROOT_BONE_SETS:
        # Root "bone" = unit torso normal (X_2 - X_9) x (X_5 - X_9) in Kinect v2, METHOD.md §3.4.
        mid, left, right = layout.torso
        a = joint[:, :, :, mid] - joint[:, :, :, right]
        b = joint[:, :, :, left] - joint[:, :, :, right]
        bone[:, :, :, layout.center] = F.normalize(torch.cross(a, b, dim=1), dim=1, eps=_EPS)
    return bone


def _rotation_axis(bone, layout):
    parent = _index(layout, "axis parents", layout.axis_pairs[:, 1], bone.device)
    return torch.cross(bone, bone[:, :, :, parent], dim=1)  # R_v = b_v x b_u, un-normalised


def _angular_velocity(bone, axis, tau, layout):
    parent = _index(layout, "axis parents", layout.axis_pairs[:, 1], bone.device)
    unit = F.normalize(bone, dim=1, eps=_EPS)
    unit_parent = unit[:, :, :, parent]
    sin = torch.linalg.vector_norm(torch.cross(unit, unit_parent, dim=1), dim=1)
    cos = (unit * unit_parent).sum(dim=1)
    theta = torch.atan2(sin, cos).unsqueeze(1)  # (N, 1, T, V, M) in [0, pi]
    omega = _time_diff(theta, tau) * F.normalize(axis, dim=1, eps=_EPS)  # axis at frame t
    omega[:, :, :, layout.center] = 0
    return omega


@torch.no_grad()
def compute_modalities(joint, frames, names, bone_pairs="ikem", true_timeline=True, layout=None):
    """Compute the requested modalities of a batch of joint sequences.

    Args:
        joint: (N, 3, T, V, M) float tensor of preprocessed (possibly augmented)
            positions in metres, on any device (V = 25 in the Kinect v2 layout).
        frames: (N,) header frame counts ``f`` (tensor, array or list); the time scale is
            ``tau = 50 / f`` (METHOD.md §3), or 1 when ``true_timeline`` is False.
        names: modality names from :data:`ikem_data.names.MODALITIES`, or a spec for
            :func:`ikem_data.names.resolve_modalities` (``"all"``, ``"joint,omega"``).
        bone_pairs: ``"ikem"`` (hand tips from the hand joint, root bone = unit torso
            normal) or ``"crossclr"`` (tip from thumb, root bone zero).
        true_timeline: scale motion, acceleration and angular velocity by ``tau``.
        layout: skeleton layout name or :class:`~ikem_data.layouts.Layout` (None: Kinect v2).

    Returns:
        dict name -> (N, 3, T, V, M) tensor, same dtype and device as ``joint``, in the
        order of ``names``. No gradient.

    Raises:
        ValueError: an unknown or repeated modality name, an unknown bone-pair set or
            layout, or V not the layout's joint count.
    """
    names = resolve_modalities(names)
    layout = get_layout(layout)
    layout.bones(bone_pairs)
    if joint.shape[3] != layout.num_joints:
        raise ValueError(f"joint has {joint.shape[3]} joints; layout {layout.name} has {layout.num_joints}")
    n = joint.shape[0]
    if true_timeline:
        f = torch.as_tensor(frames, device=joint.device).to(joint.dtype)
        tau = (RESIZED_FRAMES / f).view(n, 1, 1, 1, 1)
    else:
        tau = torch.ones(n, 1, 1, 1, 1, dtype=joint.dtype, device=joint.device)

    out = {}

    def get(name):
        if name not in out:
            for dep in _NEEDS[name]:
                get(dep)
            if name == "joint":
                out[name] = joint
            elif name == "motion":
                out[name] = _time_diff(joint, tau)
            elif name == "acceleration":
                acc = _time_diff(out["motion"], tau)
                acc[:, :, -2:] = 0  # the zero motion at T-1 never enters (METHOD.md §3.3)
                out[name] = acc
            elif name == "bone":
                out[name] = _bones(joint, bone_pairs, layout)
            elif name == "rotation_axis":
                out[name] = _rotation_axis(out["bone"], layout)
            else:
                out[name] = _angular_velocity(out["bone"], out["rotation_axis"], tau, layout)
        return out[name]

    return {name: get(name) for name in names}
