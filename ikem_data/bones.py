"""Joint pairs of the NTU RGB+D / Kinect v2 skeleton (25 joints), 0-based.

One definition, used by the numba kernels (`ikem_data`) and the torch modalities and
the ST-GCN graph (`ikem_train`). Pairs are written 1-based in METHOD.md; here each is
``(v, u)`` 0-based: the bone stored at joint v is ``X_v - X_u``.
"""

import numpy as np

NUM_JOINTS = 25
#: Spine-shoulder (joint 21, 1-based): the centre of the graph, of the per-body centring
#: and the joint whose "bone" IKEM replaces by the torso normal (METHOD.md §2, §3.4).
SPINE_SHOULDER = 20
#: Shoulders used by the y-axis alignment (METHOD.md §2 step 5): R (9) minus L (5).
SHOULDER_LEFT, SHOULDER_RIGHT = 4, 8
#: Joints spanning the torso plane for the root normal: (X_2 - X_9) x (X_5 - X_9).
SPINE_MID = 1


def _zero_based(pairs_1based):
    return np.asarray(pairs_1based, dtype=np.int64) - 1


_TRUNK_AND_LIMBS = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
    (19, 18), (20, 19), (21, 21),
]

#: IKEM six-modality bones (METHOD.md §3.4): hand tip and thumb both from the hand joint.
IKEM_BONE_PAIRS = _zero_based(_TRUNK_AND_LIMBS + [(22, 8), (23, 8), (24, 12), (25, 12)])
#: CrosSCLR / AimCLR bones: tip relative to thumb; the root bone stays zero (METHOD.md §3.4).
CROSSCLR_BONE_PAIRS = _zero_based(_TRUNK_AND_LIMBS + [(22, 23), (23, 8), (24, 25), (25, 12)])
#: Each bone crossed with its parent bone for the rotation axis (METHOD.md §3.5).
ROTATION_AXIS_PAIRS = _zero_based(_TRUNK_AND_LIMBS + [(22, 8), (23, 22), (24, 12), (25, 24)])
#: ST-GCN graph edges, without self-loops (METHOD.md §5): CrosSCLR hand edges.
GRAPH_EDGES = _zero_based([p for p in _TRUNK_AND_LIMBS if p[0] != p[1]]
                          + [(22, 23), (23, 8), (24, 25), (25, 12)])

BONE_PAIRS = {"ikem": IKEM_BONE_PAIRS, "crossclr": CROSSCLR_BONE_PAIRS}

for _pairs in (IKEM_BONE_PAIRS, CROSSCLR_BONE_PAIRS, ROTATION_AXIS_PAIRS):
    # Row v describes joint v: kernels index pairs[v] for the bone stored at joint v.
    assert (_pairs[:, 0] == np.arange(NUM_JOINTS)).all()
assert len(GRAPH_EDGES) == NUM_JOINTS - 1
