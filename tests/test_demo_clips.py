import csv

import pytest

from ikem_data.demo_clips import DEMO_CLASSES, capture_dir, write_demo_clips


def _rows(labels):
    with open(labels, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("window,block", [(40, None), (30, 45)])
def test_clips_are_verbatim_windows_and_splits_do_not_share_frames(tmp_path, window, block):
    labels = write_demo_clips(tmp_path, window=window, stride=3, train_fraction=0.65, block=block)
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
            assert clip == lines[start:start + window]
            frames[row["split"]].update(range(start, start + window))
            if block is not None:  # inside one block; every third block is val
                assert start // block == (start + window - 1) // block
                assert (start // block % 3 == 2) == (row["split"] == "val")
        assert frames["train"] and frames["val"]
        assert not frames["train"] & frames["val"]


def test_too_long_window_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Ges01_wavehand.csv"):
        write_demo_clips(tmp_path, window=120)


def test_the_val_split_is_class_balanced(tmp_path):
    rows = _rows(write_demo_clips(tmp_path, window=40, stride=2))
    per_class = [sum(1 for r in rows if r["split"] == "val" and int(r["label"]) == c) for c in range(5)]
    # the shortest capture (Ges01, 154 frames) leaves 54 val frames: starts 100, 102, ..., 114
    assert per_class == [8] * 5
    unbalanced = _rows(write_demo_clips(tmp_path / "all", window=40, stride=2, balanced_val=False))
    counts = [sum(1 for r in unbalanced if r["split"] == "val" and int(r["label"]) == c) for c in range(5)]
    assert counts[0] == 8 and counts[4] > 8
