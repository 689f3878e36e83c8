"""`ikem-data show` and the class-name table: real NTU samples and the packaged Kinect captures
drawn to PNG and GIF, checked from the pixels; every bad input refused with nothing written."""

import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ikem_cli.data import main as ikem_data
from ikem_data.show import sample as sh
from ikem_data.show.draw import GRID_TICKS
from ikem_data.modalities.stage import build_modalities
from ikem_data.class_names import (NTU_ACTIONS, dataset_class_names, demo_class_names, label_name,
                                   names_from_samples, store_class_names)
from ikem_data.demo_clips import DEMO_CLASSES, write_demo_clips
from ikem_data.gendata.run import gendata
from ikem_data.store import open_store

A001, A054, A055 = "S001C001P001R001A001", "S017C003P020R002A054", "S017C003P020R002A055"
HEAD, SPINE_BASE, SPINE_SHOULDER = 3, 0, 20
quiet = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def ntu_store(ntu_dir, tmp_path_factory):
    """A store of the 12 real NTU files (outside the repo), with all six modalities."""
    path = tmp_path_factory.mktemp("show") / "ntu.zarr"
    gendata(str(ntu_dir), str(path), workers=1, progress=False, **quiet)
    build_modalities(str(path), workers=1, progress=False)
    return path


@pytest.fixture(scope="module")
def kinect_store(tmp_path_factory):
    """A store of the packaged MIT Kinect captures cut into clips (always available)."""
    root = tmp_path_factory.mktemp("kinect")
    labels = write_demo_clips(root / "input", window=40, stride=20)
    path = root / "kinect.zarr"
    gendata(str(labels.parent / "clips"), str(path), input_format="kinect-csv", labels=str(labels), max_bodies=1,
            workers=1, progress=False, **quiet)
    build_modalities(str(path), workers=1, progress=False)
    return path


# -- pixels -------------------------------------------------------------------------------


def _rgb(image):
    return np.asarray(image.convert("RGB")).astype(int)


def _person_mask(rgb, person):
    """Pixels of person 1's blue (31, 119, 180) or person 2's red (214, 39, 40), antialiased edges included."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if person == 0:
        return (b > r + 60) & (b > g + 20) & (b > 110)
    return (r > g + 90) & (r > b + 90)


def _axes_box(scene, panel=0):
    """(left, top, right, bottom) pixels of a panel's axes in the saved picture (rows from the top)."""
    box = scene.axes[panel].get_window_extent()
    height = scene.size[1]
    return int(box.x0), int(height - box.y1), int(box.x1), int(height - box.y0)


def _render(tmp_path, sample, t, name="still.png"):
    scene = sh.Scene(sample, np.arange(sample.num_frames))
    scene.draw(t)
    path = tmp_path / name
    scene.figure.savefig(path, dpi=sh.DPI)
    return scene, _rgb(Image.open(path))


# -- drawing real samples -----------------------------------------------------------------


def test_a_still_frame_draws_the_skeleton_inside_the_axes(ntu_store, tmp_path):
    sample = sh.load_sample(ntu_store, A001)
    assert sample.label_name == "drink water" and sample.num_frames == 103
    scene, rgb = _render(tmp_path, sample, 40)
    assert rgb.shape == (sh.FRAME_PX, sh.FRAME_PX, 3)
    blue = _person_mask(rgb, 0)
    left, top, right, bottom = _axes_box(scene)
    inside = blue[top:bottom, left:right].sum()
    assert inside > 300  # 24 limbs and 25 joints
    assert blue.sum() == inside  # nothing of the body outside its axes
    assert _person_mask(rgb, 1).sum() == 0  # one person: no second colour
    # the drawn pixels are where the joints project
    for col, row in scene.joint_pixels():
        assert blue[int(row) - 3:int(row) + 4, int(col) - 3:int(col) + 4].any()
    title = scene.figure.get_suptitle()
    assert A001 in title and "drink water" in title and "frame 40 of 0-102" in title


def test_a_two_person_gif_has_the_asked_frames_and_two_colours(ntu_store, tmp_path):
    out = tmp_path / "a054.gif"
    res = sh.show(ntu_store, A054, out, frames="5:17")
    assert res["frames"] == list(range(5, 17)) and res["label_name"] == "point finger at the other person"
    with Image.open(out) as gif:
        assert gif.n_frames == 12 and gif.size == (sh.FRAME_PX, sh.FRAME_PX)
        masks = []
        for k in (0, 11):
            gif.seek(k)
            rgb = _rgb(gif)
            masks.append((_person_mask(rgb, 0), _person_mask(rgb, 1)))
    for blue, red in masks:
        assert blue.sum() > 200 and red.sum() > 200  # both persons, in their own colours
        assert not blue[:50].any() and not red[:50].any()  # below the title band, in the axes
    assert (masks[0][0] != masks[1][0]).sum() > 20  # the bodies move between frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a054.gif"]  # no partial file left


@pytest.mark.parametrize("which", ["ntu", "kinect"])
def test_the_preprocessed_joint_modality_is_upright(which, request, tmp_path):
    store = request.getfixturevalue("ntu_store" if which == "ntu" else "kinect_store")
    sample = sh.load_sample(store, A001 if which == "ntu" else 0, "joint")
    assert sample.num_frames == 50  # t_length
    scene, rgb = _render(tmp_path, sample, sample.num_frames // 2)
    pixels = scene.joint_pixels()
    assert pixels[HEAD, 1] < pixels[SPINE_SHOULDER, 1] < pixels[SPINE_BASE, 1]  # image rows grow downwards
    blue = _person_mask(rgb, 0)
    rows = np.nonzero(blue)[0]
    centre = pixels[SPINE_SHOULDER, 1]  # each body is centred on its spine-shoulder
    assert (rows > centre).sum() > 2 * (rows < centre).sum()  # torso and legs below it, only the head above
    col, row = pixels[HEAD].astype(int)
    assert blue[row - 3:row + 4, col - 3:col + 4].any()  # and the head is drawn where it projects


def test_a_grid_png_has_one_panel_per_frame(ntu_store, tmp_path):
    out = tmp_path / "grid.png"
    res = sh.show(ntu_store, A055, out, frames="0:30", grid=6)
    assert len(res["frames"]) == 6 and res["frames"][0] == 0 and res["frames"][-1] == 29
    assert res["size"] == (4 * sh.PANEL_PX, 2 * sh.PANEL_PX + sh.TITLE_PX)
    rgb = _rgb(Image.open(out))
    assert rgb.shape[:2] == (res["size"][1], res["size"][0])
    body = _person_mask(rgb, 0) | _person_mask(rgb, 1)
    for k in range(8):  # six panels drawn, the last two cells empty
        r, c = divmod(k, 4)
        cell = body[sh.TITLE_PX + r * sh.PANEL_PX: sh.TITLE_PX + (r + 1) * sh.PANEL_PX,
                    c * sh.PANEL_PX:(c + 1) * sh.PANEL_PX]
        assert (cell.sum() > 100) == (k < 6)


def test_grid_panels_have_labelled_axes_with_few_ticks(ntu_store, tmp_path):
    """A 320-pixel grid panel had matplotlib's default ~8 depth ticks (their labels overlapped)
    and no axis names; a still frame keeps its default ticks."""
    sample = sh.load_sample(ntu_store, A055, "raw")
    grid = sh.Scene(sample, np.arange(30), panels=[0, 10, 20])
    grid.figure.savefig(tmp_path / "grid.png", dpi=sh.DPI)  # ticks are placed when drawn
    for ax in grid.axes:
        axes = (ax.xaxis, ax.yaxis, ax.zaxis)
        assert [a.get_label_text() for a in axes] == ["-x (m)", "z (m)", "y (m)"]
        for axis, (low, high) in zip(axes, (ax.get_xlim(), ax.get_ylim(), ax.get_zlim())):
            shown = [t for t in axis.get_majorticklocs() if low <= t <= high]
            assert 1 <= len(shown) <= GRID_TICKS + 1, shown
    still = sh.Scene(sample, np.arange(30))
    still.draw(0)
    still.figure.savefig(tmp_path / "still.png", dpi=sh.DPI)
    low, high = still.axes[0].get_ylim()
    assert len([t for t in still.axes[0].yaxis.get_majorticklocs() if low <= t <= high]) > GRID_TICKS + 1


@pytest.mark.parametrize("modality", sh.VECTOR_MODALITIES)
def test_vector_modalities_draw_both_persons(ntu_store, tmp_path, modality):
    out = tmp_path / f"{modality}.png"
    res = sh.show(ntu_store, A055, out, modality=modality, frames="20", view="20,-60")
    assert res["modality"] == modality and res["vector_scale"] > 0
    rgb = _rgb(Image.open(out))
    assert _person_mask(rgb, 0).sum() > 100 and _person_mask(rgb, 1).sum() > 100


def test_bone_vectors_start_at_their_joint(ntu_store):
    sample = sh.load_sample(ntu_store, A001, "bone")
    joint = sh.load_sample(ntu_store, A001, "joint")
    np.testing.assert_array_equal(sample.joints, joint.joints)  # drawn from the preprocessed skeleton
    scene = sh.Scene(sample, np.arange(50))
    scene.draw(10)
    limbs, dots, arrows, heads = scene._artists[0][0]
    segments = np.asarray(arrows._segments3d)
    np.testing.assert_allclose(segments[:, 0], joint.joints[10, :, 0])
    np.testing.assert_allclose(segments[:, 1], joint.joints[10, :, 0] + scene.scale * sample.vectors[10, :, 0])


def test_the_packaged_kinect_captures_animate(kinect_store, tmp_path):
    out = tmp_path / "clip.gif"
    res = sh.show(kinect_store, 0, out, frames="0:10:3", modality="raw")
    assert res["frames"] == [0, 3, 6, 9] and res["label_name"] == "wave hand"
    with Image.open(out) as gif:
        assert gif.n_frames == 4
        assert _person_mask(_rgb(gif), 0).sum() > 200


def test_the_cli_draws_and_reports(ntu_store, tmp_path):
    out = tmp_path / "a001.png"
    result = CliRunner().invoke(ikem_data, ["show", str(ntu_store), "--sample", A001, "--out", str(out),
                                            "--frames", "12", "--modality", "joint"])
    assert result.exit_code == 0, result.output
    assert "drink water" in result.output and "640x640 px" in result.output
    assert _person_mask(_rgb(Image.open(out)), 0).sum() > 200


# -- bad input: one clear line, nothing written ---------------------------------------------


@pytest.mark.parametrize("options,message", [
    (dict(sample="S001C001P001R001A01"), "close names: S001C001P001R001A011, S001C001P001R001A001"),
    (dict(sample="99"), "out of range: the store has 12 samples"),
    (dict(frames="0:500"), "lies outside the sequence: it has 103 frames"),
    (dict(frames="100:104"), "lies outside the sequence"),
    (dict(frames="10:5"), "lies outside the sequence"),
    (dict(frames="a:b"), "must be 'a:b'"),
    (dict(frames="-3:"), "must be 'a:b'"),
    (dict(modality="skeleton"), "unknown modality 'skeleton'"),
    (dict(view="15"), "two numbers"),
    (dict(out="x.jpg"), "must end in .gif, .mp4, .png"),
    (dict(out="x.gif", grid=4), "give an output ending in .png"),
])
def test_bad_input_is_refused_and_nothing_is_written(ntu_store, tmp_path, options, message):
    args = dict(sample=A001, out="x.gif")
    args.update(options)
    out = tmp_path / "out" / args.pop("out")
    with pytest.raises(sh.ShowError, match=re.escape(message)):
        sh.show(ntu_store, args.pop("sample"), out, **args)
    assert not (tmp_path / "out").exists()


def test_mp4_without_ffmpeg_says_so(ntu_store, tmp_path, monkeypatch):
    from matplotlib import animation

    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    with pytest.raises(sh.ShowError, match="needs ffmpeg"):
        sh.show(ntu_store, A001, tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_modality_the_store_lacks(tmp_path):
    from ikem_train.data.datasets import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.zarr", n_train=4, n_val=2, frames=10, modalities=("joint",))
    with pytest.raises(sh.ShowError, match=r"has no modalities/bone; it can show: joint"):
        sh.show(store, 0, tmp_path / "b.gif", modality="bone")
    with pytest.raises(sh.ShowError, match=r"has no raw/xyz"):
        sh.show(store, 0, tmp_path / "r.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_the_cli_error_is_one_line(ntu_store, tmp_path):
    out = tmp_path / "x.gif"
    result = CliRunner().invoke(ikem_data, ["show", str(ntu_store), "--sample", "S001C001P001R001A999",
                                            "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: no sample")
    assert not out.exists()


# -- frames and class names ---------------------------------------------------------------


def test_find_sample():
    names = ["S001C001P001R001A001", "S001C001P001R001A002", "17"]
    assert sh.find_sample(names, "S001C001P001R001A002") == 1
    assert sh.find_sample(names, "S001C001P001R001A002.skeleton") == 1
    assert sh.find_sample(names, 0) == 0 and sh.find_sample(names, "1") == 1
    assert sh.find_sample(names, "17") == 2  # a name wins over an index
    with pytest.raises(sh.ShowError, match="out of range"):
        sh.find_sample(names, 3)


def test_parse_frames():
    assert sh.parse_frames(None, 5).tolist() == [0, 1, 2, 3, 4]
    assert sh.parse_frames("1:3", 5).tolist() == [1, 2]
    assert sh.parse_frames("::2", 5).tolist() == [0, 2, 4]
    assert sh.parse_frames("3:", 5).tolist() == [3, 4]
    assert sh.parse_frames("4", 5).tolist() == [4]
    for bad in ("5", "0:6", "2:2", "0:3:0", "1:2:3:4", "x"):
        with pytest.raises(sh.ShowError):
            sh.parse_frames(bad, 5)


def test_class_name_tables():
    assert len(NTU_ACTIONS) == 120 and len(set(NTU_ACTIONS)) == 120
    assert NTU_ACTIONS[0] == "drink water" and NTU_ACTIONS[22] == "hand waving"
    assert NTU_ACTIONS[59] == "walking apart from each other"
    assert NTU_ACTIONS[119] == "finger-guessing game (playing rock-paper-scissors)"
    assert dataset_class_names("ntu60") == NTU_ACTIONS[:60] and dataset_class_names("ntu120") == NTU_ACTIONS
    assert dataset_class_names("kinect") is None
    assert demo_class_names() == tuple(name for _, name in DEMO_CLASSES)
    assert names_from_samples(["S001C001P001R001A023"], [22]) == NTU_ACTIONS
    assert names_from_samples(["S001C001P001R001A023"], [3]) is None  # labels that are not the actions
    assert names_from_samples(["clips/Ges04_comehere_t010.csv", "Ges01_wavehand.csv"], [3, 0]) == demo_class_names()
    assert names_from_samples(["clips/Ges04_comehere_t010.csv"], [0]) is None
    assert label_name(["a", "b"], 1) == "b" and label_name(["a"], 7) == "class 7"


def test_store_class_names(ntu_store, kinect_store):
    with open_store(ntu_store) as store:
        names = store_class_names(store)
    assert len(names) == 60 and names[54] == "hugging other person"
    with open_store(kinect_store) as store:
        assert store_class_names(store) == list(demo_class_names())
