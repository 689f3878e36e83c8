"""Skeleton layouts: everything that depends on which joint is which, one table per layout.

NTU RGB+D, Kinect v2 captures and PKU-MMD share :data:`KINECT_V2_25`. A store records its
layout by name in ``attrs["layout"]`` (stores written before this attribute existed are
Kinect v2); the modalities, the bones, the y-alignment, IKEM's torso normal and the
ST-GCN graph all read the table of that name. Adding a layout (e.g. NW-UCLA's 20-joint
Kinect v1) means adding a table here, nothing else.
"""

from __future__ import annotations

#: The layout of NTU RGB+D, Kinect v2 and PKU-MMD (25 joints, METHOD.md §1.1).
KINECT_V2_25 = "kinect_v2_25"
#: The layout of a store without ``attrs["layout"]`` (every store before the attribute).
DEFAULT_LAYOUT = KINECT_V2_25
