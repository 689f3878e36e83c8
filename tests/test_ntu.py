"""NTU names, ids, dataset inference, missing lists and benchmark splits (METHOD.md §1.2)."""

import os

import pytest

from ikem_data.formats.ntu import (
    XSUB60_TRAIN_SUBJECTS,
    XSUB120_TRAIN_SUBJECTS,
    benchmark_splits,
    check_dataset,
    infer_dataset,
    is_training,
    list_skeleton_files,
    missing_list_path,
    missing_samples,
    parse_name,
    read_ignore_list,
)


def test_parse_name():
    sid = parse_name("S017C003P020R002A055.skeleton")
    assert tuple(sid) == (17, 3, 20, 2, 55) and sid.label == 54 and sid.name == "S017C003P020R002A055"
    assert parse_name("/x/S001C001P001R001A001").label == 0
    for bad in ("S01C001P001R001A001.skeleton", "S001C001P001R001A001.txt", "foo.skeleton", "s001c001p001r001a001"):
        with pytest.raises(ValueError, match="SsssCcccPpppRrrrAaaa"):
            parse_name(bad)


def test_subject_lists():
    assert len(XSUB60_TRAIN_SUBJECTS) == 20 and len(XSUB120_TRAIN_SUBJECTS) == 53
    assert XSUB60_TRAIN_SUBJECTS < XSUB120_TRAIN_SUBJECTS


def test_packaged_missing_lists_equal_the_official(ntu_dir):
    from conftest import META_DIR

    for dataset, count in (("ntu60", 302), ("ntu120", 535)):
        names = missing_samples(dataset)
        assert len(names) == count and len(set(names)) == count
        assert missing_list_path(dataset).read_bytes() == (META_DIR / missing_list_path(dataset).name).read_bytes()
        for name in names:
            parse_name(name)
    assert set(missing_samples("ntu60")) < set(missing_samples("ntu120"))
    real = {p.stem for p in ntu_dir.glob("*.skeleton")}
    assert not real & set(missing_samples("ntu120"))


def test_read_ignore_list(tmp_path):
    path = tmp_path / "ignore.txt"
    path.write_text("S001C001P001R001A001.skeleton\n\n  S001C001P001R001A002 \n")
    assert read_ignore_list(path) == ["S001C001P001R001A001", "S001C001P001R001A002"]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_ignore_list(tmp_path / "nope.txt")


def test_real_folder_splits(ntu_dir):
    files = list_skeleton_files(ntu_dir)
    assert [p.name for p in files] == sorted(p.name for p in ntu_dir.glob("*.skeleton"))
    ids = [parse_name(p) for p in files]
    assert infer_dataset(ids) == "ntu60"
    splits = benchmark_splits(ids, "ntu60")
    assert set(splits) == {"ntu60-xsub", "ntu60-xview"}
    names = [p.stem for p in files]
    xsub_train = {names[i] for i in splits["ntu60-xsub"]["train"]}
    # P001 and P020... subject 1 trains, 3 and 20 do not (20 is not in the list).
    assert xsub_train == {n for n in names if n[8:12] == "P001"}
    xview_train = {names[i] for i in splits["ntu60-xview"]["train"]}
    assert xview_train == {"S017C003P020R002A054", "S017C003P020R002A055"}
    for parts in splits.values():
        both = sorted(parts["train"].tolist() + parts["val"].tolist())
        assert both == list(range(len(files))) and parts["train"].dtype.name == "int64"


def test_ntu120_benchmarks():
    ids = [parse_name(n) for n in ("S018C002P045R001A061", "S001C001P003R002A001", "S002C002P001R001A120")]
    assert infer_dataset(ids) == "ntu120"
    with pytest.raises(ValueError, match="S018C002P045R001A061.*ntu120"):
        check_dataset(ids, "ntu60")
    splits = benchmark_splits(ids, "ntu120")
    assert splits["ntu120-xsub"]["train"].tolist() == [0, 2]
    assert splits["ntu120-xset"]["train"].tolist() == [0, 2] and splits["ntu120-xset"]["val"].tolist() == [1]
    assert splits["ntu60-xsub"]["train"].tolist() == [] and splits["ntu60-xsub"]["val"].tolist() == [1]
    assert is_training(ids[1], "ntu60-xview") is False
    with pytest.raises(ValueError):
        is_training(ids[0], "ntu60-xset")


def test_list_skeleton_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        list_skeleton_files(tmp_path / "nothere")
    with pytest.raises(ValueError, match="no .skeleton files"):
        list_skeleton_files(tmp_path)
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("0\n")
    (tmp_path / "clip7.skeleton").write_text("0\n")
    with pytest.raises(ValueError, match="clip7.skeleton"):
        list_skeleton_files(tmp_path)


def test_ids_are_one_based_and_ascii():
    for bad, field in (("S001C001P001R001A000", "action"), ("S000C001P001R001A001", "setup"),
                       ("S001C000P001R001A001", "camera"), ("S001C001P000R001A001", "subject"),
                       ("S001C001P001R000A001", "replication")):
        with pytest.raises(ValueError, match=f"{bad}.*{field} 0 is not an NTU id"):
            parse_name(bad + ".skeleton")
    with pytest.raises(ValueError, match="SsssCcccPpppRrrrAaaa"):  # Arabic-Indic digits: int() would take them
        parse_name("S\u0660\u0660\u0661C001P001R001A001")


def test_ids_beyond_ntu120_are_refused():
    with pytest.raises(ValueError, match="S001C001P001R001A121 is not an NTU RGB\\+D sample"):
        check_dataset([parse_name("S001C001P001R001A121")], "ntu120")
    with pytest.raises(ValueError, match="S033C001P001R001A001 is not an NTU RGB\\+D sample"):
        check_dataset([parse_name("S033C001P001R001A001")], "ntu120")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_list_skeleton_files_refuses_entries_that_are_not_regular_files(tmp_path):
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("0\n")
    os.mkfifo(tmp_path / "S001C001P001R001A002.skeleton")
    with pytest.raises(ValueError, match="S001C001P001R001A002.skeleton is a named pipe .*only regular files"):
        list_skeleton_files(tmp_path)
