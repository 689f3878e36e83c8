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


Frame indices are 0-based everywhere (``--frames 0:30`` are the first 30 frames).

Outputs (by the suffix of ``out``): ``.gif`` (matplotlib's PillowWriter, which holds every
frame in memory until it writes, about 1.2 MB per frame: thin long sequences with
``--frames ::2``), ``.mp4`` (matplotlib's FFMpegWriter; only when an ffmpeg encoder is
found), ``.png`` (one frame, or a grid of frames with ``grid``). Everything is checked
before anything is written; the file is written under a temporary name and renamed, so a
failure leaves nothing behind.

This module reads the sample and checks the options; :mod:`ikem_data.show.draw` draws
(colours, axes, projection, title) and writes the picture.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

import numpy as np

from ikem_data.names import MODALITIES
from ikem_data.show.draw import DEFAULT_VIEW, DPI, FRAME_PX, PANEL_PX, RAW, TITLE_PX, Sample, Scene, to_plot

# The public names; the drawing ones (DPI, FRAME_PX, PANEL_PX, TITLE_PX, Sample, Scene, ...)
# live in show_draw and stay importable from here, where tests and callers find them.
__all__ = ["CHOICES", "DEFAULT_GRID", "DEFAULT_VIEW", "DPI", "FRAME_PX", "PANEL_PX", "RAW", "SUFFIXES",
           "TITLE_PX", "VECTOR_MODALITIES", "Sample", "Scene", "ShowError", "check_output", "find_sample",
           "load_sample", "parse_frames", "parse_view", "resolve_modality", "show"]

#: What ``modality`` may name (aliases of :func:`ikem_data.names.resolve_modalities` too).
CHOICES = (RAW,) + MODALITIES
VECTOR_MODALITIES = tuple(m for m in MODALITIES if m != "joint")
SUFFIXES = (".gif", ".mp4", ".png")
DEFAULT_GRID = 8


class ShowError(ValueError):
    """A sample, modality, frame range, view or output that cannot be drawn; the message says why."""


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
        OutputError: ``out`` is a folder (or pipe, device), or its folder cannot be made.
    """
    from ikem_data.outputs import check_output_file

    suffix = Path(out).suffix.lower()
    check_output_file(out)  # a folder named a001.gif failed only after the whole animation was drawn
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
            joints, vectors = to_plot(block), None
        else:
            joints = to_plot(np.asarray(store["modalities/joint"][index]))
            vectors = to_plot(np.asarray(store[f"modalities/{modality}"][index])) if modality != "joint" else None
    present = np.abs(joints).sum(axis=(1, 3)) > 0  # (T, M)
    return Sample(index=index, name=names[index], label=label, label_name=label_name(classes, label),
                  modality=modality, joints=joints, vectors=vectors, present=present,
                  edges=np.asarray(layout.graph_edges))


# -- the command ------------------------------------------------------------------------


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
        if kind == "png" and grid is None:
            scene.draw(int(drawn[0]))  # a grid drew its panels when it was made
        scene.save(partial, kind, drawn, fps)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
        scene.close()
    return {"path": str(out), "format": kind, "index": data.index, "name": data.name, "label": data.label,
            "label_name": data.label_name, "modality": data.modality, "frames": [int(t) for t in drawn],
            "size": scene.size, "vector_scale": scene.scale}
