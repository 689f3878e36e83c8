import csv

import pytest

from ikem_data.demo_clips import DEMO_CLASSES, capture_dir, write_demo_clips


def _rows(labels):
    with open(labels, newline="") as handle:
        return list(csv.DictReader(handle))


def test_clips_are_verbatim_windows_and_splits_do_not_share_frames(tmp_path):
    labels = write_demo_clips(tmp_path, window=40, stride=3, train_fraction=0.65)
    rows = _rows(labels)
    assert {r["split"] for r in rows} == {"train", "val"}
    assert {int(r["label"]) for r in rows} == set(range(len(DEMO_CLASSES)))
    for label, (capture, _) in enumerate(DEMO_CLASSES):
        lines = (capture_dir() / capture).read_bytes().splitlines(keepends=True)
        frames = {"train": set(), "val": set()}
        for row in rows:
            if int(row["label"]) != label:
                continue
            start = int(row["file"].rsplit("_t", 1)[1].split(".")[0])
            clip = (tmp_path / row["file"]).read_bytes().splitlines(keepends=True)
            assert clip == lines[start:start + 40]
            frames[row["split"]].update(range(start, start + 40))
        assert frames["train"] and frames["val"]
        assert not frames["train"] & frames["val"]


def test_too_long_window_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Ges01_wavehand.csv"):
        write_demo_clips(tmp_path, window=120)
