"""Skeleton layouts: everything that depends on which joint is which, one table per layout.

NTU RGB+D, Kinect v2 captures and PKU-MMD share :data:`KINECT_V2_25`. A store records its
layout by name in ``attrs["layout"]`` (stores written before this attribute existed are
Kinect v2); the preprocessing (centring, y-alignment, valid length), the bones, IKEM's
torso normal, the rotation axes and the ST-GCN graph all read the :class:`Layout` of that
name. NW-UCLA, UTD-MHAD and MSRC-12 share
:data:`KINECT_V1_20`. Adding a layout means adding a table to :data:`LAYOUTS`, nothing else.

Pairs are written 1-based as in METHOD.md and stored 0-based: row v of a pair table is
``(v, u)``, the bone stored at joint v is ``X_v - X_u``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The layout of NTU RGB+D, Kinect v2 and PKU-MMD (25 joints, METHOD.md §1.1).
KINECT_V2_25 = "kinect_v2_25"
#: The Kinect v1 / SDK 1.x skeleton of NW-UCLA, UTD-MHAD (reordered by its reader) and MSRC-12.
KINECT_V1_20 = "kinect_v1_20"
#: The layout of a store without ``attrs["layout"]`` (every store before the attribute).
DEFAULT_LAYOUT = KINECT_V2_25
#: Bone sets whose root bone (at the centre joint) is the unit torso normal (METHOD.md §3.4).
NORMAL_ROOT_BONE_SETS = ("ikem",)


@dataclass(frozen=True)
class Layout:
    """One skeleton layout (all indices 0-based).

    Attributes:
        name: the name stores record.
        joints: joint names; V = ``len(joints)``.
        center: the centre joint: each body is centred on it, it is the ST-GCN graph's
            centre, and its bone is IKEM's torso normal (spine-shoulder in Kinect v2).
        base: the joint whose presence in body 0 makes a frame valid (METHOD.md §2 step 2).
        shoulders: ``(left, right)``: the y-alignment turns ``right - left`` onto +x.
        torso: ``(mid, left, right)``: IKEM's torso normal is
            ``normalize((X_mid - X_right) x (X_left - X_right))``.
        bone_pairs: bone set name -> (V, 2) pairs ``(v, parent)``.
        axis_pairs: (V, 2) pairs ``(v, u)``: the rotation axis at v is ``b_v x b_u``.
        graph_edges: (E, 2) undirected ST-GCN edges, no self-loops.
    """

    name: str
    joints: tuple
    center: int
    base: int
    shoulders: tuple
    torso: tuple
    bone_pairs: dict = field(repr=False)
    axis_pairs: np.ndarray = field(repr=False)
    graph_edges: np.ndarray = field(repr=False)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def bones(self, bone_set: str) -> np.ndarray:
        """The (V, 2) pairs of ``bone_set``.

        Raises:
            ValueError: a bone set this layout does not define (the message lists them).
        """
        if bone_set not in self.bone_pairs:
            raise ValueError(f"unknown bone_pairs {bone_set!r} for layout {self.name}; "
                             f"valid: {', '.join(self.bone_pairs)}")
        return self.bone_pairs[bone_set]

    def check(self) -> None:
        """Raise ValueError unless every table fits V joints (row v of a pair table is v)."""
        v = self.num_joints
        for name, pairs in [*self.bone_pairs.items(), ("axis", self.axis_pairs)]:
            if pairs.shape != (v, 2) or not (pairs[:, 0] == np.arange(v)).all() or pairs.max() >= v:
                raise ValueError(f"layout {self.name}: {name} pairs must list joints 0..{v - 1} in order")
        joints = [self.center, self.base, *self.shoulders, *self.torso]
        if self.graph_edges.ndim != 2 or self.graph_edges.shape[1] != 2 or self.graph_edges.max() >= v \
                or min(joints) < 0 or max(joints) >= v:
            raise ValueError(f"layout {self.name}: joint indices must lie in 0..{v - 1}")


def _zero_based(pairs_1based):
    return np.asarray(pairs_1based, dtype=np.int64) - 1


_KV2_TRUNK_AND_LIMBS = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
    (19, 18), (20, 19), (21, 21),
]

_KINECT_V2 = Layout(
    name=KINECT_V2_25,
    joints=("spine base", "spine mid", "neck", "head", "left shoulder", "left elbow", "left wrist", "left hand",
            "right shoulder", "right elbow", "right wrist", "right hand", "left hip", "left knee", "left ankle",
            "left foot", "right hip", "right knee", "right ankle", "right foot", "spine shoulder",
            "left hand tip", "left thumb", "right hand tip", "right thumb"),
    center=20,  # spine-shoulder, joint 21 (METHOD.md §2 step 3, §3.4, §5)
    base=0,  # spine base, joint 1 (METHOD.md §2 step 2)
    shoulders=(4, 8),  # L and R shoulder, joints 5 and 9 (METHOD.md §2 step 5)
    torso=(1, 4, 8),  # (X_2 - X_9) x (X_5 - X_9) (METHOD.md §3.4)
    bone_pairs={
        # IKEM six-modality bones: hand tip and thumb both from the hand joint (METHOD.md §3.4)
        "ikem": _zero_based(_KV2_TRUNK_AND_LIMBS + [(22, 8), (23, 8), (24, 12), (25, 12)]),
        # CrosSCLR / AimCLR bones: tip relative to thumb; the root bone stays zero
        "crossclr": _zero_based(_KV2_TRUNK_AND_LIMBS + [(22, 23), (23, 8), (24, 25), (25, 12)]),
    },
    # each bone crossed with its parent bone (METHOD.md §3.5); thumbs pair with hand tips
    axis_pairs=_zero_based(_KV2_TRUNK_AND_LIMBS + [(22, 8), (23, 22), (24, 12), (25, 24)]),
    # ST-GCN's ntu-rgb+d edges (CrosSCLR hand edges), without self-loops (METHOD.md §5)
    graph_edges=_zero_based([p for p in _KV2_TRUNK_AND_LIMBS if p[0] != p[1]]
                            + [(22, 23), (23, 8), (24, 25), (25, 12)]),
)

# Kinect SDK 1.x joint tree (1-based, (v, parent)); the shoulder centre is the root, as
# spine-shoulder is in Kinect v2, so every shared bone keeps its direction.
_KV1_TREE = [
    (1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
    (19, 18), (20, 19),
]

_KINECT_V1 = Layout(
    name=KINECT_V1_20,
    joints=("hip center", "spine", "shoulder center", "head", "left shoulder", "left elbow", "left wrist",
            "left hand", "right shoulder", "right elbow", "right wrist", "right hand", "left hip", "left knee",
            "left ankle", "left foot", "right hip", "right knee", "right ankle", "right foot"),
    # Kinect v1 has no spine-shoulder: the shoulder centre (joint 3) takes its roles, as
    # the centre, the graph's centre and the root whose bone is IKEM's torso normal.
    center=2,
    base=0,  # hip center, the counterpart of spine base
    shoulders=(4, 8),
    # (X_spine - X_Rshoulder) x (X_Lshoulder - X_Rshoulder): v1's spine joint sits where
    # v2's spine mid does, so the normal keeps its meaning.
    torso=(1, 4, 8),
    # no hand tips or thumbs: both bone sets are the tree (they differ only at the hands in v2)
    bone_pairs={"ikem": _zero_based(_KV1_TREE), "crossclr": _zero_based(_KV1_TREE)},
    axis_pairs=_zero_based(_KV1_TREE),
    graph_edges=_zero_based([p for p in _KV1_TREE if p[0] != p[1]]),
)

#: Every layout ikem supports, by name.
LAYOUTS = {layout.name: layout for layout in (_KINECT_V2, _KINECT_V1)}
for _layout in LAYOUTS.values():
    _layout.check()


def get_layout(layout=None) -> Layout:
    """The :class:`Layout` named ``layout`` (a Layout passes through; None: the default).

    Raises:
        ValueError: a layout ikem has no table for; the message lists those it has.
    """
    if isinstance(layout, Layout):
        return layout
    name = DEFAULT_LAYOUT if layout is None else layout
    if name not in LAYOUTS:
        raise ValueError(f"skeleton layout {name!r} is not supported; ikem has tables for: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def store_layout(store) -> Layout:
    """The layout a store records in ``attrs["layout"]`` (Kinect v2 when absent).

    Raises:
        ValueError: the store names a layout ikem has no table for.
    """
    name = store.attrs.get("layout", DEFAULT_LAYOUT)
    try:
        return get_layout(name)
    except ValueError as err:
        raise ValueError(f"store {store.path}: {err}") from None
