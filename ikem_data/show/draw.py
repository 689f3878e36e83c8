"""Drawing one sample with matplotlib, for ``ikem-data show`` (:mod:`ikem_data.show.sample` reads
the sample and checks the options; this module makes the picture and writes it).

Bodies: person 1 blue, person 2 red; a body absent in a frame (all zeros) is not drawn.
Axes: Kinect camera space as the sensor sees it (x to the left, y up, z away from the
sensor: the horizontal axis shows -x); the same limits for every frame, equal scale on
all three axes (a cube) and an orthographic projection, so bodies are not distorted. The
title holds the sample name, its action name (:mod:`ikem_data.class_names`), the
modality and the frame counter. Rendering uses matplotlib's Agg canvas directly (no
display, no pyplot state); matplotlib is imported only when a picture is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The modality name of the recorded coordinates (``raw/xyz``), as opposed to a modality.
RAW = "raw"
PERSON_COLOURS = ("#1f77b4", "#d62728")  # matplotlib's tab:blue, tab:red; more bodies cycle
#: Default camera of the 3D axes, (elevation, azimuth) in degrees (matplotlib's view_init):
#: slightly above and to the side of the sensor's own view (elev 0, azim -90).
DEFAULT_VIEW = (15.0, -70.0)
DPI = 100
#: Pixel size of an animation or single-frame picture (width = height).
FRAME_PX = 640
#: Pixel size of one grid panel; a grid is ``GRID_COLUMNS`` panels wide at most, plus a
#: title band of ``TITLE_PX``: (320 * columns) x (320 * rows + 64) pixels.
PANEL_PX = 320
GRID_COLUMNS = 4
TITLE_PX = 64
GRID_TICKS = 3  # ticks per axis of a grid panel
#: Axis labels of the plot coordinates (-x, z, y), metres.
AXIS_LABELS = ("-x (m)", "z (m)", "y (m)")
VECTOR_SHARE = 0.25  # the 99th-percentile vector length, as a share of the body's extent


@dataclass
class Sample:
    """One sample, ready to draw (plot coordinates: ``(-x, z, y)``, metres).

    Attributes:
        index: store index; name: sample name; label: 0-based; label_name: its action name.
        modality: ``raw`` or a modality name.
        joints: (T, V, M, 3) float64 joint positions in plot coordinates.
        vectors: (T, V, M, 3) the modality's vectors in plot coordinates, or None.
        present: (T, M) bool, body m present in frame t.
        edges: (E, 2) int limbs (the layout's ``graph_edges``).
    """

    index: int
    name: str
    label: int
    label_name: str
    modality: str
    joints: np.ndarray
    vectors: np.ndarray | None
    present: np.ndarray
    edges: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.joints.shape[0]


def to_plot(xyz):
    """(3, T, V, M) camera space -> (T, V, M, 3) plot coordinates (-x, z, y), float64."""
    x, y, z = (np.asarray(c, dtype=np.float64) for c in xyz)
    return np.stack([-x, z, y], axis=-1)


def vector_scale(sample: Sample, frames) -> float:
    """The factor ``s`` of the drawn vectors (1 when the sample has none or all are zero)."""
    if sample.vectors is None:
        return 1.0
    mask = sample.present[frames]  # (n, M)
    lengths = np.linalg.norm(sample.vectors[frames], axis=-1).transpose(0, 2, 1)[mask]  # (k, V)
    pos = sample.joints[frames].transpose(0, 2, 1, 3)[mask].reshape(-1, 3)
    if lengths.size == 0 or pos.size == 0:
        return 1.0
    typical = float(np.percentile(lengths, 99))
    extent = float((pos.max(0) - pos.min(0)).max())
    return VECTOR_SHARE * extent / typical if typical > 0 and extent > 0 else 1.0


def _bounds(sample: Sample, frames, scale):
    """(3, 2) cube limits holding every drawn point of ``frames`` (same for the whole picture)."""
    mask = sample.present[frames]
    points = [sample.joints[frames].transpose(0, 2, 1, 3)[mask].reshape(-1, 3)]
    if sample.vectors is not None:
        tips = sample.joints[frames] + scale * sample.vectors[frames]
        points.append(tips.transpose(0, 2, 1, 3)[mask].reshape(-1, 3))
    points = np.concatenate(points)
    if points.size == 0:
        return np.array([[-1.0, 1.0]] * 3)
    low, high = points.min(0), points.max(0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2 * 1.05, 0.05)
    return np.stack([centre - half, centre + half], axis=1)


class Scene:
    """A matplotlib figure of one sample: one 3D panel (animation, still) or a grid of panels.

    Args:
        sample: from :func:`ikem_data.show.sample.load_sample`.
        frames: (n,) frame indices the picture covers (limits and vector scale use these).
        view: (elev, azim) degrees.
        panels: None for one panel that :meth:`draw` moves through the frames; else the
            frame index of each grid panel.

    Attributes:
        figure: the ``matplotlib.figure.Figure`` (Agg canvas); size: (width, height) pixels.
    """

    def __init__(self, sample: Sample, frames, view=DEFAULT_VIEW, panels=None):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self.sample, self.frames = sample, np.asarray(frames)
        self.scale = vector_scale(sample, self.frames)
        limits = _bounds(sample, self.frames, self.scale)
        if panels is None:
            cols, rows, width, height = 1, 1, FRAME_PX, FRAME_PX
        else:
            cols = min(GRID_COLUMNS, len(panels))
            rows = math.ceil(len(panels) / cols)
            width, height = PANEL_PX * cols, PANEL_PX * rows + TITLE_PX
        self.size = (width, height)
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        FigureCanvasAgg(self.figure)
        top = 1 - (TITLE_PX if panels is not None else 56) / height
        self.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.05, hspace=0.12)
        self.axes, self._artists, self._drawn = [], [], {}
        for k in range(1 if panels is None else len(panels)):
            ax = self.figure.add_subplot(rows, cols, k + 1, projection="3d")
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            ax.set_zlim(*limits[2])
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(*view)
            ax.set_proj_type("ortho")  # no perspective: one scale for near and far bodies
            small = panels is not None
            for axis, text in zip((ax.xaxis, ax.yaxis, ax.zaxis), AXIS_LABELS):
                axis.set_tick_params(labelsize=5 if small else 7, pad=0)
                if small:  # a 320-pixel panel: three ticks an axis, or the depth ticks overlap
                    axis.set_major_locator(MaxNLocator(GRID_TICKS))
                axis.set_label_text(text, fontsize=6 if small else 8)
                axis.labelpad = -6 if small else 4  # close to the ticks in a small panel
            self.axes.append(ax)
            self._artists.append(self._make_artists(ax))
        self._headline = f"{sample.name}  ·  {sample.label_name}  (label {sample.label})"
        what = "raw xyz" if sample.modality == RAW else (
            f"{sample.modality}" + (f" (vectors x{self.scale:.3g}, from each joint)" if sample.vectors is not None
                                    else " (preprocessed)"))
        self._what = what
        if panels is not None:
            self.figure.suptitle(f"{self._headline}\n{what}", fontsize=9)
            for k, t in enumerate(panels):
                self.draw(int(t), panel=k)
                self.axes[k].set_title(f"frame {int(t)}", fontsize=8, pad=0)

    def _make_artists(self, ax):
        from mpl_toolkits.mplot3d.art3d import Line3DCollection

        out = []
        vectors = self.sample.vectors is not None
        for m in range(self.sample.joints.shape[2]):
            colour = PERSON_COLOURS[m % len(PERSON_COLOURS)]
            limbs = Line3DCollection([], colors=colour, linewidths=1.2 if vectors else 2.2,
                                     alpha=0.35 if vectors else 1.0)
            _add_collection(ax, limbs)
            (dots,) = ax.plot([], [], [], "o", color=colour, markersize=2 if vectors else 3,
                              alpha=0.35 if vectors else 1.0)
            arrows = heads = None
            if vectors:
                arrows = Line3DCollection([], colors=colour, linewidths=1.6)
                _add_collection(ax, arrows)
                (heads,) = ax.plot([], [], [], "o", color=colour, markersize=3)
            out.append((limbs, dots, arrows, heads))
        return out

    def draw(self, t, panel=0):
        """Show frame ``t`` in panel ``panel`` (and the frame counter in the one-panel title)."""
        s = self.sample
        self._drawn[panel] = int(t)
        for m, (limbs, dots, arrows, heads) in enumerate(self._artists[panel]):
            if not s.present[t, m]:
                limbs.set_segments([])
                dots.set_data_3d([], [], [])
                if arrows is not None:
                    arrows.set_segments([])
                    heads.set_data_3d([], [], [])
                continue
            p = s.joints[t, :, m]  # (V, 3)
            limbs.set_segments(np.stack([p[s.edges[:, 0]], p[s.edges[:, 1]]], axis=1))
            dots.set_data_3d(p[:, 0], p[:, 1], p[:, 2])
            if arrows is not None:
                tip = p + self.scale * s.vectors[t, :, m]
                arrows.set_segments(np.stack([p, tip], axis=1))
                heads.set_data_3d(tip[:, 0], tip[:, 1], tip[:, 2])
        if len(self.axes) == 1:
            count = s.num_frames
            self.figure.suptitle(f"{self._headline}\n{self._what}, frame {t} of 0-{count - 1}", fontsize=10)

    def joint_pixels(self, panel=0, person=0, t=None):
        """Where each joint of ``person`` lands in the saved picture: (V, 2) (column, row) pixels,
        rows counted from the top. ``t``: the frame (default: the one drawn last in the panel).
        """
        from mpl_toolkits.mplot3d import proj3d

        ax = self.axes[panel]
        self.figure.canvas.draw()
        t = self._drawn.get(panel, int(self.frames[0])) if t is None else t
        p = self.sample.joints[t, :, person]
        x, y, _ = proj3d.proj_transform(p[:, 0], p[:, 1], p[:, 2], ax.get_proj())
        px = ax.transData.transform(np.stack([x, y], axis=1))
        return np.stack([px[:, 0], self.size[1] - px[:, 1]], axis=1)

    def save(self, path, kind, frames, fps):
        """Write the picture to ``path``: a ``png`` of what the panels show now, or a
        ``gif``/``mp4`` animation that draws each of ``frames`` in turn, ``fps`` a second."""
        if kind == "png":
            self.figure.savefig(path, dpi=DPI)
            return
        from matplotlib import animation

        writer = animation.PillowWriter(fps=fps) if kind == "gif" else animation.FFMpegWriter(fps=fps)
        with writer.saving(self.figure, str(path), DPI):
            for t in frames:
                self.draw(int(t))
                writer.grab_frame()

    def close(self):
        self.figure.clear()


def _add_collection(ax, collection):
    """Add a 3D collection without touching the fixed limits (``autolim`` exists from matplotlib 3.10)."""
    try:
        ax.add_collection3d(collection, autolim=False)
    except TypeError:  # matplotlib < 3.10 never autoscaled here
        ax.add_collection3d(collection)
