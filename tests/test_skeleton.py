"""The byte-level `.skeleton` parser against real NTU files and crafted ones."""

import os

import numpy as np
import pytest
from ntu_reader import read_xyz
from skeleton_files import alarm, expected_listed, random_frames, skeleton_text

from ikem_data.formats.skeleton import (
    SkeletonFormatError,
    load_xyz,
    parse_skeleton,
    read_frame_count,
    read_skeleton,
    select_bodies,
)

REAL = {  # name: (frames, distinct bodies, line ends) from ../shared/data/README.md
    "S001C001P001R001A001": (103, 1, "LF"), "S001C001P001R001A006": (75, 1, "CRLF"),
    "S001C001P001R001A050": (74, 2, "LF"), "S002C001P003R001A003": (100, 1, "CRLF"),
    "S017C003P020R002A054": (42, 2, "LF"), "S017C003P020R002A055": (66, 2, "LF"),
}


def test_real_files_equal_the_plain_reader(ntu_dir):
    files = sorted(ntu_dir.glob("*.skeleton"))
    assert len(files) == 12
    for path in files:
        xyz, n_frames, n_bodies = load_xyz(path)
        expected, expected_frames = read_xyz(path)
        assert xyz.dtype == np.float32 and xyz.shape == (3, n_frames, 25, 2)
        np.testing.assert_array_equal(xyz, expected, err_msg=path.name)
        assert n_frames == expected_frames == read_frame_count(path)
        if path.stem in REAL:
            frames, bodies, ends = REAL[path.stem]
            assert (n_frames, n_bodies) == (frames, bodies)
            assert (b"\r\n" in path.read_bytes()) == (ends == "CRLF")


def test_real_body_ids_are_exact_int64(ntu_dir):
    path = ntu_dir / "S001C001P001R001A050.skeleton"
    sk = read_skeleton(path)
    text_ids = [int(line.split()[0]) for line in path.read_text().splitlines() if len(line.split()) == 10]
    assert sk.body_id.dtype == np.int64 and sk.body_id.tolist() == text_ids
    assert all(i > 2**56 for i in text_ids)


def test_real_two_person_tracked_keeps_both_people(ntu_dir):
    sk = read_skeleton(ntu_dir / "S017C003P020R002A055.skeleton")
    listed, tracked = select_bodies(sk, "listed"), select_bodies(sk, "tracked")
    # Each body keeps its slot across frames in this file, so tracking may only swap the slots.
    same = np.array_equal(listed, tracked)
    swapped = np.array_equal(listed, tracked[..., ::-1])
    assert same or swapped


def test_crlf_equals_lf_and_blank_lines():
    frames = random_frames(np.random.default_rng(1), 4, 1)
    lf = parse_skeleton(skeleton_text(frames).encode())
    crlf = parse_skeleton(skeleton_text(frames, newline="\r\n").encode())
    np.testing.assert_array_equal(select_bodies(lf), select_bodies(crlf))
    np.testing.assert_array_equal(select_bodies(lf), expected_listed(frames))
    loose = skeleton_text(frames).replace(" 0 ", " \t 0  ").replace("\n", "  \r\n\n")  # tabs, runs, blanks
    np.testing.assert_array_equal(select_bodies(parse_skeleton(loose.encode())), expected_listed(frames))
    no_final_newline = parse_skeleton(skeleton_text(frames).rstrip("\n").encode())
    np.testing.assert_array_equal(select_bodies(no_final_newline), expected_listed(frames))


def test_zero_body_frames_are_zero_and_counted():
    frames = random_frames(np.random.default_rng(2), 6, [1, 0, 0, 1, 0, 1])
    sk = parse_skeleton(skeleton_text(frames).encode())
    xyz = select_bodies(sk)
    assert sk.n_frames == 6 and xyz.shape == (3, 6, 25, 2)
    assert not xyz[:, [1, 2, 4]].any() and xyz[:, [0, 3, 5], :, 0].all()
    np.testing.assert_array_equal(xyz, expected_listed(frames))
    empty = parse_skeleton(skeleton_text([[], []]).encode())
    assert empty.n_frames == 2 and not select_bodies(empty).any()


def test_three_and_four_bodies_keep_first_two_listed():
    frames = random_frames(np.random.default_rng(3), 5, [3, 4, 2, 4, 1])
    sk = parse_skeleton(skeleton_text(frames).encode())
    assert sk.n_bodies == 4 and len(sk.frame) == 14
    np.testing.assert_array_equal(select_bodies(sk), expected_listed(frames))
    assert select_bodies(sk, max_bodies=4)[..., 3].any()


def test_tracked_follows_ids_and_prefers_motion():
    rng = np.random.default_rng(4)
    still = [(0.0, 0.0, 3.0)] * 25
    frames = []
    for t in range(6):
        moving = [tuple(float(v) for v in np.round(rng.normal(size=3) * (t + 1), 7)) for _ in range(25)]
        bodies = [(11, still), (33, still), (22, moving)]
        if t % 2:  # listing order changes from frame to frame
            bodies = bodies[::-1]
        frames.append(bodies)
    sk = parse_skeleton(skeleton_text(frames).encode())
    tracked = select_bodies(sk, "tracked")
    for t, bodies in enumerate(frames):
        by_id = dict(bodies)
        np.testing.assert_array_equal(tracked[:, t, :, 0], np.asarray(by_id[22], np.float32).T)
        np.testing.assert_array_equal(tracked[:, t, :, 1], np.asarray(by_id[11], np.float32).T)
    with pytest.raises(ValueError, match="listed, tracked"):
        select_bodies(sk, "energy")


def test_long_sequences_are_not_truncated():
    frames = random_frames(np.random.default_rng(5), 345, 1)
    xyz = select_bodies(parse_skeleton(skeleton_text(frames).encode()))
    assert xyz.shape[1] == 345 and xyz[:, 344].any()


def test_numbers_parse_like_python_float():
    values = ["0.2181153", "-0.0668001", "0.002290169", "1036.233", "3", "-2.5e-05", "1E3", "+7.25",
              "0.1", "0.30000001", "-0", "123456789.123456789"]
    xyz = [tuple(values[(3 * v + c) % len(values)] for c in range(3)) for v in range(25)]
    text = "1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n" + "".join(f"{x} {y} {z} 0 0 0 0 0 0 0 0 2\n" for x, y, z in xyz)
    got = parse_skeleton(text.encode()).xyz[0]
    want = np.array([[float(s) for s in row] for row in xyz]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def _malformed(text):
    with pytest.raises(SkeletonFormatError) as info:
        parse_skeleton(text.encode(), "bad.skeleton")
    return info.value


def test_malformed_files_name_line_and_expectation():
    good = skeleton_text(random_frames(np.random.default_rng(6), 2, 1)).splitlines(keepends=True)
    # Line numbers (1-based): 1 header, 2 body count, 3 body line, 4 joint count, 5-29 joints,
    # 30 body count of frame 2, ...
    err = _malformed("".join(good[:6] + [good[6].replace(" 2\n", "\n")] + good[7:]))
    assert err.line == 7 and "expected 12 fields, found 11" in str(err) and "bad.skeleton:7" in str(err)
    err = _malformed("".join(good[:9] + [good[9].replace("277.419", "27x.419")] + good[10:]))
    assert err.line == 10 and "field 4 is not a number" in str(err)
    err = _malformed("".join(good[:40]))
    assert err.line == 41 and "end of file" in str(err) and "frame 2" in str(err)
    err = _malformed("".join(good[:3] + ["24\n"] + good[4:28] + good[29:]))
    assert err.line == 4 and "joint count 24, expected 25" in str(err)
    err = _malformed("".join(["1\n"] + good[1:]))  # header says 1 frame, file holds 2
    assert err.line == 30 and "content after the last frame" in str(err)
    err = _malformed("".join(good[:2] + ["1.5 0 1 1 1 1 0 0.1 0.2 2\n"] + good[3:]))
    assert err.line == 3 and "field 1 is not a number" in str(err)
    err = _malformed("".join(good[:2] + ["7 0 1 1 1 1 0 0.1 0.2x 2\n"] + good[3:]))
    assert err.line == 3 and "field 9 is not a number" in str(err)
    err = _malformed("".join(good[:2] + ["7 0 1 1 1 1 0 0.1 0.2\n"] + good[3:]))
    assert err.line == 3 and "expected 10 fields, found 9" in str(err)
    err = _malformed("")
    assert err.line == 1 and "frame count" in str(err)
    err = _malformed("abc\n")
    assert err.line == 1 and "not a number" in str(err)
    err = _malformed("-1\n")
    assert "negative" in str(err)


def test_error_carries_path(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text("2\n0\n")
    with pytest.raises(SkeletonFormatError) as info:
        read_skeleton(path)
    assert info.value.path == str(path) and info.value.line == 3
    (tmp_path / "empty.skeleton").write_bytes(b"")
    with pytest.raises(SkeletonFormatError, match="frame count"):
        read_frame_count(tmp_path / "empty.skeleton")


def test_random_numbers_equal_python_float():
    """22 500 tokens in the shapes real files and other writers produce, parsed like float()."""
    rng = np.random.default_rng(7)
    tokens = []
    for _ in range(3000):
        kind = rng.integers(6)
        if kind == 0:
            tokens.append(repr(float(rng.normal())))
        elif kind == 1:
            tokens.append("%.7g" % rng.normal(scale=10.0 ** rng.integers(-4, 4)))
        elif kind == 2:
            tokens.append("%.*f" % (int(rng.integers(0, 12)), rng.normal(scale=10.0 ** rng.integers(-3, 6))))
        elif kind == 3:
            tokens.append(str(int(rng.integers(-10**6, 10**6))))
        elif kind == 4:
            tokens.append("%.3e" % rng.normal())
        else:
            digits = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 20))))
            tokens.append(("-" if rng.random() < 0.5 else "") + "0." + digits)
    rows = [tokens[3 * k: 3 * k + 3] for k in range(len(tokens) // 3)]
    frames = len(rows) // 25
    text = [str(frames)]
    for t in range(frames):
        text += ["1", "5 0 0 0 0 0 0 0 0 2", "25"]
        text += [" ".join(row) + " 0 0 0 0 0 0 0 0 2" for row in rows[25 * t: 25 * t + 25]]
    got = parse_skeleton(("\n".join(text) + "\n").encode()).xyz.reshape(-1, 3)
    want = np.array([[float(x) for x in row] for row in rows[: 25 * frames]]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def _one_body(body_id="72057594037931101", xyz="0.1 0.2 3.0", frames=1):
    body = f"{body_id} 0 1 1 1 1 0 0.1 0.2 2\n25\n" + f"{xyz} 0 0 0 0 0 0 0 0 2\n" * 25
    return f"{frames}\n" + ("1\n" + body) * frames


def test_values_that_cannot_be_stored_are_refused_with_their_line():
    for xyz, field in (("1e400 0.2 3.0", 1), ("0.1 -1e39 3.0", 2), ("0.1 0.2 1e99999", 3)):
        err = _malformed(_one_body(xyz=xyz))
        assert err.line == 5 and f"field {field} ({'xyz'[field - 1]}) is not a finite float32" in str(err)
    for body_id in ("9223372036854775808", "99999999999999999999", "18446744073709551616"):
        err = _malformed(_one_body(body_id=body_id))  # would wrap in int64
        assert err.line == 3 and "body ID out of range" in str(err)
    err = _malformed("10000000000000000000\n" + _one_body().split("\n", 1)[1])
    assert err.line == 1 and "frame count out of range" in str(err)
    edge = parse_skeleton(_one_body(body_id="9223372036854775807", xyz="0e400 -0e999 3.4028234e38").encode())
    assert edge.body_id.tolist() == [2**63 - 1]  # the largest int64 still fits
    assert edge.xyz[0, 0].tolist() == [0.0, 0.0, float(np.float32(3.4028234e38))]  # 0e400 is 0, not NaN


def test_counts_larger_than_the_file_are_clear_errors(tmp_path):
    body = _one_body().split("\n", 1)[1]
    err = _malformed("1000000000\n" + body)  # ends at the first missing frame, naming the header
    assert err.line == 30 and "the header on line 1 says 1000000000 frames, the file holds 1" in str(err)
    err = _malformed("1\n1000000000\n" + body.split("\n", 1)[1])
    assert err.line == 30 and "its body count on line 2 says 1000000000 bodies" in str(err)
    path = tmp_path / "S001C001P001R001A001.skeleton"
    for header in ("1000000000", "10000000000000000000"):  # a header alone must not size anything
        path.write_text(f"{header}\n" + body)
        with pytest.raises(SkeletonFormatError, match=r"skeleton:1: frame count \d+ is impossible") as info:
            read_frame_count(path)
        assert info.value.line == 1
    path.write_text("0\n\n")
    assert read_frame_count(path) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "S001C001P001R001A001.skeleton"
    os.mkfifo(fifo)
    with alarm(20):  # without a writer, opening a FIFO blocks forever
        for read in (read_skeleton, read_frame_count):
            with pytest.raises(OSError, match="regular file"):
                read(fifo)
