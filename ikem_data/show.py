"""Pictures of one stored sample (``ikem-data show``): a 3D skeleton animation or a grid of frames.

What is drawn:

- ``raw`` (default): ``raw/xyz`` as recorded, camera-space metres, the sample's own
  frame count (``raw/frames``).
- ``joint``: the preprocessed sequence ``modalities/joint`` (each body centred on its
  spine-shoulder, resized to ``t_length`` frames, shoulders turned onto +x).
- ``bone``, ``motion``, ``acceleration``, ``rotation_axis``, ``angular_velocity``: the
  preprocessed skeleton (``modalities/joint``) drawn faint, and the modality's vector at
  joint v drawn as a line **from joint v's position** to ``joint + s * vector`` with a dot
  at its head. One rule for all five: the vector stored at joint v starts at joint v. A
  bone ``b_v = X_v - X_parent`` therefore continues its limb outwards (drawn from the
  parent it would only retrace the limb), and IKEM's root bone (the unit torso normal at
  the spine-shoulder) shows which way the chest faces. ``s`` is one factor per sample,
  fixed over the animation and given in the title: the 99th percentile of the vector
  lengths becomes a quarter of the body's extent.

Bodies: person 1 blue, person 2 red; a body absent in a frame (all zeros) is not drawn.
Axes: Kinect camera space as the sensor sees it (x to the left, y up, z away from the
sensor: the horizontal axis shows -x); the same limits for every frame, equal scale on
all three axes (a cube) and an orthographic projection, so bodies are not distorted. The
title holds the sample name, its action name (:mod:`ikem_data.class_names`), the
modality and the frame counter. Frame indices are 0-based everywhere (``--frames 0:30``
are the first 30 frames).

Outputs (by the suffix of ``out``): ``.gif`` (matplotlib's PillowWriter, which holds every
frame in memory until it writes, about 1.2 MB per frame: thin long sequences with
``--frames ::2``), ``.mp4`` (matplotlib's FFMpegWriter; only when an ffmpeg encoder is
found), ``.png`` (one frame, or a grid of frames with ``grid``). Everything is checked
before anything is written; the file is written under a temporary name and renamed, so a
failure leaves nothing behind. Rendering uses matplotlib's Agg canvas directly (no
display, no pyplot state).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ikem_data.names import MODALITIES

RAW = "raw"
#: What ``modality`` may name (aliases of :func:`ikem_data.names.resolve_modalities` too).
CHOICES = (RAW,) + MODALITIES
VECTOR_MODALITIES = tuple(m for m in MODALITIES if m != "joint")
SUFFIXES = (".gif", ".mp4", ".png")
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
DEFAULT_GRID = 8
VECTOR_SHARE = 0.25  # the 99th-percentile vector length, as a share of the body's extent


class ShowError(ValueError):
    """A sample, modality, frame range, view or output that cannot be drawn; the message says why."""


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


# -- parsing the options -------------------------------------------------------------------


def find_sample(names, sample) -> int:
    """Store index of ``sample``: a sample name, or a 0-based index given as int or digits.

    Raises:
        ShowError: no such name (the closest names are suggested) or an index out of range.
    """
    text = str(sample).strip()
    if text.endswith(".skeleton") and text[: -len(".skeleton")] in names:  # a raw file name
        text = text[: -len(".skeleton")]
    if text in names:
        return names.index(text)
    if text.isdigit():
        index = int(text)
        if index >= len(names):
            raise ShowError(f"sample index {index} is out of range: the store has {len(names)} samples "
                            f"(0-{len(names) - 1})")
        return index
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else f"names look like {names[0]!r}" if names else "it is empty"
    raise ShowError(f"no sample {text!r} in the store ({len(names)} samples); {hint}")


def parse_frames(spec, count) -> np.ndarray:
    """Frame indices of ``spec`` within a sequence of ``count`` frames.

    Args:
        spec: None (all), ``"a:b"`` or ``"a:b:step"`` (0-based, ``b`` exclusive, either end
            may be left out, like a Python slice) or ``"a"`` (one frame).

    Returns:
        (n,) int64 indices, n >= 1.

    Raises:
        ShowError: not of that form, negative, a step < 1, or outside ``0..count-1``.
    """
    if spec is None:
        return np.arange(count)
    text = str(spec).strip()
    parts = text.split(":")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        values = None
    if values is None or len(parts) > 3 or (len(parts) == 1 and values[0] is None) \
            or any(v is not None and v < 0 for v in values):
        raise ShowError(f"--frames {text!r} must be 'a:b', 'a:b:step' or 'a' with 0-based frame numbers")
    if len(parts) == 1:
        start, stop, step = values[0], values[0] + 1, 1
    else:
        start = values[0] if values[0] is not None else 0
        stop = values[1] if values[1] is not None else count
        step = values[2] if len(values) == 3 and values[2] is not None else 1
    if step < 1:
        raise ShowError(f"--frames {text!r}: the step must be at least 1")
    if not (0 <= start < stop <= count):
        raise ShowError(f"--frames {text!r} lies outside the sequence: it has {count} frames, "
                        f"so frames run from 0 to {count - 1} (e.g. --frames 0:{count})")
    return np.arange(start, stop, step)


def parse_view(spec):
    """``"elev,azim"`` in degrees (None: :data:`DEFAULT_VIEW`) -> (elev, azim) floats.

    Raises:
        ShowError: not two finite numbers.
    """
    if spec is None:
        return DEFAULT_VIEW
    if isinstance(spec, (tuple, list)):
        parts = list(spec)
    else:
        parts = str(spec).split(",")
    try:
        elev, azim = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ShowError(f"--view {spec!r} must be two numbers 'elev,azim' in degrees, e.g. 15,-70") from None
    if not (math.isfinite(elev) and math.isfinite(azim)):
        raise ShowError(f"--view {spec!r} must be finite")
    return elev, azim


def check_output(out, grid=None) -> str:
    """The output kind (``gif``, ``mp4``, ``png``) of path ``out``.

    Raises:
        ShowError: an unsupported suffix; ``grid`` with anything but ``.png``; ``.mp4``
            without an ffmpeg encoder (matplotlib finds none on the PATH).
    """
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise ShowError(f"cannot write {Path(out).name!r}: the output must end in {', '.join(SUFFIXES)}")
    if grid is not None and suffix != ".png":
        raise ShowError(f"--grid draws a still picture: give an output ending in .png, not {suffix}")
    if suffix == ".mp4":
        from matplotlib import animation

        if not animation.writers.is_available("ffmpeg"):
            raise ShowError("writing .mp4 needs ffmpeg, which matplotlib does not find on the PATH; "
                            "install ffmpeg or write a .gif instead")
    return suffix[1:]


def resolve_modality(modality) -> str:
    """``raw`` or one canonical modality name (aliases such as ``omega`` allowed).

    Raises:
        ShowError: an unknown name or more than one.
    """
    from ikem_data.names import resolve_modalities

    text = RAW if modality is None else str(modality).strip()
    if text == RAW:
        return RAW
    try:
        names = resolve_modalities(text)
    except ValueError as exc:
        raise ShowError(f"{exc}; or raw (the recorded coordinates)") from None
    if len(names) != 1 or text == "all":
        raise ShowError(f"--modality takes one name, not {text!r}")
    return names[0]


# -- reading ------------------------------------------------------------------------------


def _to_plot(xyz):
    """(3, T, V, M) camera space -> (T, V, M, 3) plot coordinates (-x, z, y), float64."""
    x, y, z = (np.asarray(c, dtype=np.float64) for c in xyz)
    return np.stack([-x, z, y], axis=-1)


def load_sample(store_path, sample, modality=RAW) -> Sample:
    """Read one sample of a store for drawing.

    Args:
        store_path: an ikem store.
        sample: a sample name or a 0-based store index (see :func:`find_sample`).
        modality: ``raw`` (``raw/xyz``, the sample's ``raw/frames`` frames) or a modality
            name (``modalities/<name>``, ``t_length`` frames).

    Raises:
        ShowError: unknown sample or modality, or the store lacks the array (the message
            lists what it has and the command that builds it).
        FileNotFoundError, ValueError: not an ikem store.
    """
    from ikem_data.class_names import label_name, store_class_names
    from ikem_data.layouts import store_layout
    from ikem_data.store import open_store

    modality = resolve_modality(modality)
    with open_store(store_path, "r") as store:
        need = "raw/xyz" if modality == RAW else f"modalities/{modality}"
        if "raw/name" not in store or "raw/label" not in store:
            raise ShowError(f"store {store.path} has no raw/name and raw/label; build it with `ikem-data gendata`")
        if need not in store or (modality in VECTOR_MODALITIES and "modalities/joint" not in store):
            have = [m for m in MODALITIES if f"modalities/{m}" in store]
            have = ([RAW] if "raw/xyz" in store else []) + have
            build = "`ikem-data gendata`" if modality == RAW else f"`ikem-data modalities --out {store.path}`"
            raise ShowError(f"store {store.path} has no {need}; it can show: {', '.join(have) or 'nothing'} "
                            f"(build {need} with {build})")
        names = store.names()
        index = find_sample(names, sample)
        label = int(store["raw/label"][index])
        layout = store_layout(store)
        classes = store_class_names(store)
        if modality == RAW:
            count = int(store["raw/frames"][index]) if "raw/frames" in store else store["raw/xyz"].shape[2]
            block = np.asarray(store["raw/xyz"][index])[:, :max(1, min(count, store["raw/xyz"].shape[2]))]
            joints, vectors = _to_plot(block), None
        else:
            joints = _to_plot(np.asarray(store["modalities/joint"][index]))
            vectors = _to_plot(np.asarray(store[f"modalities/{modality}"][index])) if modality != "joint" else None
    present = np.abs(joints).sum(axis=(1, 3)) > 0  # (T, M)
    return Sample(index=index, name=names[index], label=label, label_name=label_name(classes, label),
                  modality=modality, joints=joints, vectors=vectors, present=present,
                  edges=np.asarray(layout.graph_edges))


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


# -- drawing ------------------------------------------------------------------------------


class Scene:
    """A matplotlib figure of one sample: one 3D panel (animation, still) or a grid of panels.

    Args:
        sample: from :func:`load_sample`.
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
            for axis, text in zip((ax.xaxis, ax.yaxis, ax.zaxis), ("-x (m)", "z (m)", "y (m)")):
                axis.set_tick_params(labelsize=5 if small else 7, pad=0)
                if not small:
                    axis.set_label_text(text, fontsize=8)
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

    def close(self):
        self.figure.clear()


def _add_collection(ax, collection):
    """Add a 3D collection without touching the fixed limits (``autolim`` exists from matplotlib 3.10)."""
    try:
        ax.add_collection3d(collection, autolim=False)
    except TypeError:  # matplotlib < 3.10 never autoscaled here
        ax.add_collection3d(collection)


def _temporary(out: Path) -> Path:
    return out.with_name(f".{out.stem}.partial{out.suffix}")


def show(store, sample, out, *, modality=RAW, frames=None, view=None, grid=None, fps=30) -> dict:
    """Draw one sample of ``store`` into ``out`` (``.gif``, ``.mp4`` or ``.png``).

    Args:
        store: an ikem store.
        sample: sample name (``S001C001P001R001A001``) or 0-based store index.
        out: output file; its suffix picks the format. Its folder is created.
        modality: ``raw`` (default) or a modality name (see the module docstring).
        frames: ``"a:b"``, ``"a:b:step"`` or ``"a"`` (0-based, :func:`parse_frames`); None: all.
        view: ``"elev,azim"`` degrees or a pair; None: :data:`DEFAULT_VIEW`.
        grid: with a ``.png``: the number of panels, frames spread evenly over ``frames``
            (all of them when fewer); None: a ``.png`` shows the first selected frame.
        fps: frames per second of ``.gif``/``.mp4`` (NTU records at 30).

    Returns:
        dict: ``path``, ``format``, ``index``, ``name``, ``label``, ``label_name``,
        ``modality``, ``frames`` (the drawn frame indices, one per animation frame or
        grid panel), ``size`` (width, height) pixels, ``vector_scale``.

    Raises:
        ShowError: bad sample, modality, frames, view, grid, fps or output (nothing written).
    """
    out = Path(out)
    kind = check_output(out, grid)
    angles = parse_view(view)
    if grid is not None and int(grid) < 1:
        raise ShowError(f"--grid {grid}: give at least one panel")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ShowError(f"--fps must be a positive number, not {fps!r}")
    data = load_sample(store, sample, modality)
    chosen = parse_frames(frames, data.num_frames)
    if grid is not None:
        picks = np.unique(np.linspace(0, len(chosen) - 1, min(int(grid), len(chosen))).round().astype(int))
        drawn = chosen[picks]
        scene = Scene(data, chosen, angles, panels=drawn)
    else:
        drawn = chosen if kind != "png" else chosen[:1]
        scene = Scene(data, chosen, angles)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _temporary(out)
    try:
        if kind == "png":
            if grid is None:
                scene.draw(int(drawn[0]))
            scene.figure.savefig(partial, dpi=DPI)
        else:
            from matplotlib import animation

            writer = animation.PillowWriter(fps=fps) if kind == "gif" else animation.FFMpegWriter(fps=fps)
            with writer.saving(scene.figure, str(partial), DPI):
                for t in drawn:
                    scene.draw(int(t))
                    writer.grab_frame()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
        scene.close()
    return {"path": str(out), "format": kind, "index": data.index, "name": data.name, "label": data.label,
            "label_name": data.label_name, "modality": data.modality, "frames": [int(t) for t in drawn],
            "size": scene.size, "vector_scale": scene.scale}
