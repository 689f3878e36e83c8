"""A byte-level parser for NTU RGB+D ``.skeleton`` files (METHOD.md §1.1).

The whole file is read as bytes and tokenised by one numba kernel: no Python string,
list or dict per line. Accepted: LF and CRLF line ends, blank lines, spaces or tabs
between fields, frames with 0 bodies (kept as all-zero frames), any number of bodies
per frame, body IDs parsed as int64 (never via a float). Counts, body IDs and x, y, z
are converted strictly; the other fields (used by nobody) are checked to hold only
numeric characters (digits, ``+ - . e E``), so ``27x.4`` is caught but ``1.2.3`` is not.
Every line must have its field count (frame count 1, body count 1, body line 10, joint
count 1 and equal to 25, joint line 12), and the content must match the header.
Values that would be stored wrongly are refused rather than passed on: an integer
(count or body ID) beyond the int64 range (it would wrap) and an x, y or z that is not a
finite float32 (``1e400`` overflows to inf, ``1e39`` overflows float32).

No count from the file sizes an allocation before it is checked. The parser's records
are bounded by the file's line count, and a frame or body count larger than the file
holds ends in an "unexpected end of file" that names the line of the count.
:func:`read_frame_count`, which reads the header alone, checks the count against the
file's size: every frame needs at least a 2-byte body-count line, so the ``S`` bytes
after the header line hold at most ``(S + 1) // 2`` frames.
A violation raises :class:`SkeletonFormatError` naming the file, the 1-based line and
what was expected.

Only regular files are read (:func:`read_regular_file`): a named pipe or a device
named like a sample is refused at once instead of blocking the reader forever.

Body selection (two people at most, ``M = 2`` slots):

* ``listed`` (default, the reference's): slot ``m`` of frame ``t`` holds the ``m``-th
  body listed in that frame; bodies listed 3rd and 4th are dropped.
* ``tracked``: every distinct body ID is one track (placed at the frames where it
  appears); the ``M`` tracks with the most motion are kept, most motion in slot 0
  (ties: first seen first). Motion = sum over joints and x, y, z of the variance over
  the track's frames. A person whose ID changes mid-sequence becomes two tracks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ikem_data.files import read_regular_file
from ikem_data.layouts import KINECT_V2_25, get_layout

NUM_JOINTS = get_layout(KINECT_V2_25).num_joints  # 25: NTU files hold Kinect v2 joints
BODY_FIELDS = 10
JOINT_FIELDS = 12
BODY_POLICIES = ("listed", "tracked")

# Exact powers of ten representable in float64 (10**22 is the largest).
_POW10 = np.array([10.0 ** k for k in range(23)], dtype=np.float64)

# Error codes of the kernel.
_OK, _EOF, _FIELDS, _NONNUM, _JOINTS, _NEGATIVE, _TRAILING, _RANGE, _FRAMES, _NONFINITE = range(10)
_WHAT = ("the frame count", "a body count", "a body line (10 fields)", "a joint count",
         "a joint line (12 fields)")
# What an integer-led line holds, for "out of range" messages (index = the kernel's `what`).
_INT_WHAT = ("frame count", "body count", "body ID", "joint count")
_INT64_MAX = np.int64(2**63 - 1)
# Largest finite float32: a coordinate beyond it would be stored as inf.
_F32_MAX = float(np.finfo(np.float32).max)
# Fewest bytes one frame can take: a one-digit body count and its line feed.
MIN_FRAME_BYTES = 2


class SkeletonFormatError(ValueError):
    """A malformed ``.skeleton`` file.

    Attributes:
        path: the file (or ``"<bytes>"``).
        line: 1-based line number (0 when not tied to a line).
        reason: what was found and what was expected.
    """

    def __init__(self, path, line, reason):
        self.path = str(path)
        self.line = int(line)
        self.reason = reason
        where = f"{self.path}:{self.line}" if self.line else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (SkeletonFormatError, (self.path, self.line, self.reason))


class Skeleton(NamedTuple):
    """Every body record of one file, in listing order.

    Attributes:
        n_frames: frame count from the header (frames with 0 bodies included).
        frame: (R,) int32 frame of each body record.
        slot: (R,) int8 position of the body in its frame's listing (0-based).
        body_id: (R,) int64 Kinect tracking id.
        xyz: (R, 25, 3) float32 joint positions, camera space, metres.
    """

    n_frames: int
    frame: np.ndarray
    slot: np.ndarray
    body_id: np.ndarray
    xyz: np.ndarray

    @property
    def n_bodies(self) -> int:
        """Distinct body IDs in the file."""
        return int(np.unique(self.body_id).size)


# Byte classes for the fast field scan: 0 numeric character, 1 blank (space, tab, CR),
# 2 line feed, 3 anything else (never valid in a .skeleton file).
_CLASS = np.full(256, 3, dtype=np.uint8)
_CLASS[np.frombuffer(b"0123456789.+-eE", dtype=np.uint8)] = 0
_CLASS[np.frombuffer(b" \t\r", dtype=np.uint8)] = 1
_CLASS[10] = 2


@njit(cache=True, nogil=True, inline="always")
def _start_line(data, pos, n, line):
    """Skip blank lines from ``pos``; return (first non-blank byte or -1 at EOF, line number)."""
    while pos < n:
        line += 1
        i = pos
        while i < n and (data[i] == 32 or data[i] == 9 or data[i] == 13):
            i += 1
        if i < n and data[i] != 10:
            return i, line
        pos = i + 1
    return -1, line


# Byte-lane constants for the 8-bytes-at-a-time scan.
_L01 = np.uint64(0x0101010101010101)
_L7F = np.uint64(0x7F7F7F7F7F7F7F7F)
_L80 = np.uint64(0x8080808080808080)
_L0A = np.uint64(0x0A0A0A0A0A0A0A0A)
_L21 = np.uint64(0x2121212121212121)


@njit(cache=True, nogil=True)
def _all_valid(data):
    """True when every byte may occur in a well-formed file (digits, + - . e E, blanks, LF).

    A vectorisable pass; when it holds, fields need only be counted, not classified.
    """
    bad = 0
    for i in range(data.shape[0]):
        c = data[i]
        ok = ((c == 9) | (c == 10) | (c == 13) | (c == 32) | (c == 43) | (c == 45) | (c == 46)
              | ((c >= 48) & (c <= 57)) | (c == 69) | (c == 101))
        bad |= 1 - np.uint8(ok)
    return bad == 0


@njit(cache=True, nogil=True, inline="always")
def _count_bytes(data, i, stop, fields, prev_blank):
    """Count field starts byte by byte in ``data[i:stop]`` up to a line feed.

    Returns ``(fields, prev_blank, next index, True when a line feed ended the line)``.
    """
    while i < stop:
        c = data[i]
        if c == 10:
            return fields, prev_blank, i + 1, True
        nonblank = 1 if c > 32 else 0
        fields += nonblank & prev_blank
        prev_blank = 1 - nonblank
        i += 1
    return fields, prev_blank, i, False


@njit(cache=True, nogil=True, inline="always")
def _scan_rest_words(data, words, i, n):
    """:func:`_scan_rest` for files known to hold only valid bytes, 8 bytes at a time.

    Per 64-bit word: non-blank bytes (>= 0x21) and the line feed are flagged in the high
    bit of each byte lane; a field starts at a non-blank byte after a blank one.
    """
    fields, prev_blank, i, done = _count_bytes(data, i, min(n, (i + 7) & ~7), 0, 1)  # to a word boundary
    if done:
        return fields, 0, i
    carry = np.uint64(0) if prev_blank else np.uint64(0x80)
    k = i >> 3
    while k < words.shape[0]:
        w = words[k]
        t = w ^ _L0A
        newline = ~(((t & _L7F) + _L7F) | t | _L7F)
        nonblank = ((w | _L80) - _L21) & _L80
        if newline != np.uint64(0):
            low = newline & (~newline + np.uint64(1))
            nonblank &= low - np.uint64(1)
            starts = nonblank & ~((nonblank << np.uint64(8)) | carry)
            fields += np.int64((((starts >> np.uint64(7)) * _L01) >> np.uint64(56)))
            at = np.int64(((((low - np.uint64(1)) & _L01) * _L01) >> np.uint64(56))) - 1
            return fields, 0, 8 * k + at + 1
        starts = nonblank & ~((nonblank << np.uint64(8)) | carry)
        fields += np.int64((((starts >> np.uint64(7)) * _L01) >> np.uint64(56)))
        carry = (nonblank >> np.uint64(56)) & np.uint64(0x80)
        k += 1
    fields, _, i, _ = _count_bytes(data, 8 * k, n, fields, 0 if carry else 1)  # the tail after the last word
    return fields, 0, i


@njit(cache=True, nogil=True)
def _scan_rest(data, i, n, cls):
    """Count the fields from ``i`` to the end of the line without converting them.

    Returns (fields, 1 when a byte that cannot be part of a number was seen, start of the
    next line). Branch-light: this loop sees most of the bytes of a file.
    """
    fields = 0
    prev_blank = 1
    bad = 0
    while i < n:
        cl = cls[data[i]]
        if cl == 2:
            break
        nonblank = 1 if cl != 1 else 0
        fields += nonblank & prev_blank
        bad |= 1 if cl == 3 else 0
        prev_blank = 1 - nonblank
        i += 1
    return fields, bad, (i + 1 if i < n else n)


@njit(cache=True, nogil=True, inline="always")
def _at_token_end(data, i, n):
    return i >= n or data[i] == 32 or data[i] == 9 or data[i] == 13 or data[i] == 10


@njit(cache=True, nogil=True, inline="always")
def _parse_number(data, i, n, pow10):
    """Parse one decimal number at ``i`` (sign, digits, fraction, exponent).

    Returns (value, next index, ok). The first 18 digits are kept as an exact int64
    mantissa (later integer digits scale it, later fraction digits are dropped), so a
    value with at most 15 digits and a power of ten up to 22 is correctly rounded, as
    Python's ``float()`` gives it.
    """
    neg = False
    c = np.int64(data[i]) if i < n else np.int64(0)
    if c == 45 or c == 43:
        neg = c == 45
        i += 1
    mant = np.int64(0)
    exp10 = 0
    digits = 0
    while i < n:
        d = np.int64(data[i]) - 48
        if d < 0 or d > 9:
            break
        if digits < 18:
            mant = mant * 10 + d
        else:
            exp10 += 1
        digits += 1
        i += 1
    if i < n and data[i] == 46:
        i += 1
        while i < n:
            d = np.int64(data[i]) - 48
            if d < 0 or d > 9:
                break
            if digits < 18:
                mant = mant * 10 + d
                exp10 -= 1
            digits += 1
            i += 1
    if digits == 0:
        return 0.0, i, False
    if i < n and (data[i] == 101 or data[i] == 69):
        i += 1
        eneg = False
        if i < n and (data[i] == 45 or data[i] == 43):
            eneg = data[i] == 45
            i += 1
        ed = 0
        ev = 0
        while i < n and 48 <= data[i] <= 57:
            if ev < 10000:
                ev = ev * 10 + (np.int64(data[i]) - 48)
            ed += 1
            i += 1
        if ed == 0:
            return 0.0, i, False
        exp10 += -ev if eneg else ev
    if not _at_token_end(data, i, n):
        return 0.0, i, False
    if mant == 0:  # 0e400 is 0 (scaling by 10**400 = inf would give NaN)
        return (-0.0 if neg else 0.0), i, True
    value = float(mant)
    if exp10 < 0:
        if exp10 >= -22:
            value = value / pow10[-exp10]
        else:
            value = value * 10.0 ** exp10
    elif exp10 > 0:
        if exp10 <= 22:
            value = value * pow10[exp10]
        else:
            value = value * 10.0 ** exp10
    return -value if neg else value, i, True


@njit(cache=True, nogil=True, inline="always")
def _parse_int(data, i, n):
    """Parse an optionally signed integer token.

    Returns (value, next index, status): status ``_OK``, ``_NONNUM`` (not an integer) or
    ``_RANGE`` (beyond int64: it would wrap, so it is refused, never clipped).
    """
    neg = False
    if i < n and (data[i] == 45 or data[i] == 43):
        neg = data[i] == 45
        i += 1
    v = np.int64(0)
    digits = 0
    overflow = False
    while i < n and 48 <= data[i] <= 57:
        d = np.int64(data[i]) - 48
        if v > (_INT64_MAX - d) // 10:
            overflow = True
        else:
            v = v * 10 + d
        digits += 1
        i += 1
    if digits == 0 or not _at_token_end(data, i, n):
        return np.int64(0), i, _NONNUM
    if overflow:
        return np.int64(0), i, _RANGE
    return (-v if neg else v), i, _OK


@njit(cache=True, nogil=True)
def _bad_field(data, i, n, pow10):
    """1-based index of the first field from ``i`` on that is not a number (error path only)."""
    field = 0
    while i < n and data[i] != 10:
        while i < n and (data[i] == 32 or data[i] == 9 or data[i] == 13):
            i += 1
        if i >= n or data[i] == 10:
            break
        field += 1
        _, j, ok = _parse_number(data, i, n, pow10)
        if not ok:
            return field
        i = j
    return 0


@njit(cache=True, nogil=True)
def _int_line(data, words, fast, pos, n, line, cls, pow10, expected_fields):
    """A line that starts with an integer and has ``expected_fields`` fields.

    Returns (status, value, a, b, next pos, line): status ``_OK`` or an error code with
    its details ``a``/``b``.
    """
    s, line = _start_line(data, pos, n, line)
    if s < 0:
        return _EOF, 0, 0, 0, n, line + 1
    value, i, status = _parse_int(data, s, n)
    if status == _NONNUM:
        return _NONNUM, 0, 1, 0, n, line
    if fast:
        rest, bad, pos = _scan_rest_words(data, words, i, n)
    else:
        rest, bad, pos = _scan_rest(data, i, n, cls)
    if bad:
        return _NONNUM, 0, _bad_field(data, s, n, pow10), 0, n, line
    if rest + 1 != expected_fields:
        return _FIELDS, 0, rest + 1, expected_fields, n, line
    if status == _RANGE:
        return _RANGE, 0, 0, 0, n, line
    return _OK, value, 0, 0, pos, line


@njit(cache=True, nogil=True)
def _parse_kernel(data, words, fast, max_records, pow10, cls):
    """Tokenise a whole file.

    Returns (status, line, a, b, c, d, n_frames, n_records, frame, slot, body_id, xyz);
    on an error, ``status`` is an error code, ``line`` the 1-based line and ``a``..``d``
    its details (see :func:`_error_message`; for an integer-led line, ``b`` says which
    line it was, an index into ``_WHAT``, except with ``_FIELDS``).
    """
    n = data.shape[0]
    frame = np.empty(max_records, dtype=np.int32)
    slot = np.empty(max_records, dtype=np.int8)
    body_id = np.empty(max_records, dtype=np.int64)
    xyz = np.zeros((max_records, NUM_JOINTS, 3), dtype=np.float32)
    rec = 0

    st, n_frames, a, b, pos, line = _int_line(data, words, fast, 0, n, 0, cls, pow10, 1)
    if st != _OK:
        return st, line, a, b, 0, 0, 0, 0, frame, slot, body_id, xyz
    if n_frames < 0:
        return _NEGATIVE, line, n_frames, 0, 0, 0, 0, 0, frame, slot, body_id, xyz
    # No count sizes anything here: records are bounded by the line count (max_records)
    # and a count larger than the file holds ends in _EOF, whose message names the count.
    for t in range(n_frames):
        st, n_bodies, a, b, pos, line = _int_line(data, words, fast, pos, n, line, cls, pow10, 1)
        if st == _EOF:  # the header promised more frames than the file holds
            return _EOF, line, 1, t, n_frames, 1, n_frames, rec, frame, slot, body_id, xyz
        if st != _OK:
            return st, line, a, (b if st == _FIELDS else 1), 0, 0, n_frames, rec, frame, slot, body_id, xyz
        if n_bodies < 0:
            return _NEGATIVE, line, n_bodies, 0, 0, 0, n_frames, rec, frame, slot, body_id, xyz
        count_line = line
        for m in range(n_bodies):
            st, bid, a, b, pos, line = _int_line(data, words, fast, pos, n, line, cls, pow10, BODY_FIELDS)
            if st == _EOF:
                return _EOF, line, 2, t, n_bodies, count_line, n_frames, rec, frame, slot, body_id, xyz
            if st != _OK:
                return st, line, a, (b if st == _FIELDS else 2), 0, 0, n_frames, rec, frame, slot, body_id, xyz
            st, n_joints, a, b, pos, line = _int_line(data, words, fast, pos, n, line, cls, pow10, 1)
            if st == _EOF:
                return _EOF, line, 3, t, n_bodies, count_line, n_frames, rec, frame, slot, body_id, xyz
            if st != _OK:
                return st, line, a, (b if st == _FIELDS else 3), 0, 0, n_frames, rec, frame, slot, body_id, xyz
            if n_joints != NUM_JOINTS:
                return _JOINTS, line, n_joints, NUM_JOINTS, 0, 0, n_frames, rec, frame, slot, body_id, xyz
            if rec >= max_records:  # cannot happen: max_records bounds the line count
                return _TRAILING, line, n_frames, 0, 0, 0, n_frames, rec, frame, slot, body_id, xyz
            frame[rec] = t
            slot[rec] = min(m, 127)
            body_id[rec] = bid
            for v in range(NUM_JOINTS):
                s, line = _start_line(data, pos, n, line)
                if s < 0:
                    return _EOF, line + 1, 4, t, n_bodies, count_line, n_frames, rec, frame, slot, body_id, xyz
                i = s
                for f in range(3):
                    if f:
                        while i < n and (data[i] == 32 or data[i] == 9):
                            i += 1
                        if i >= n or data[i] == 10 or data[i] == 13:
                            return _FIELDS, line, f, JOINT_FIELDS, 0, 0, n_frames, rec, frame, slot, body_id, xyz
                    value, i, ok = _parse_number(data, i, n, pow10)
                    if not ok:
                        return _NONNUM, line, f + 1, 4, 0, 0, n_frames, rec, frame, slot, body_id, xyz
                    stored = np.float32(value)
                    if not abs(stored) <= _F32_MAX:  # inf (1e400, 1e39) or NaN: never stored
                        return _NONFINITE, line, f + 1, 0, 0, 0, n_frames, rec, frame, slot, body_id, xyz
                    xyz[rec, v, f] = stored
                if fast:
                    rest, bad, pos = _scan_rest_words(data, words, i, n)
                else:
                    rest, bad, pos = _scan_rest(data, i, n, cls)
                if bad:
                    return (_NONNUM, line, _bad_field(data, s, n, pow10), 4, 0, 0, n_frames, rec, frame, slot,
                            body_id, xyz)
                if rest + 3 != JOINT_FIELDS:
                    return _FIELDS, line, rest + 3, JOINT_FIELDS, 0, 0, n_frames, rec, frame, slot, body_id, xyz
            rec += 1
    s, line = _start_line(data, pos, n, line)
    if s >= 0:
        return _TRAILING, line, n_frames, 0, 0, 0, n_frames, rec, frame, slot, body_id, xyz
    return _OK, 0, 0, 0, 0, 0, n_frames, rec, frame, slot, body_id, xyz


def _error_message(code, a, b, c=0, d=0):
    if code == _EOF:
        what = _WHAT[a]
        if a == 0:
            return f"unexpected end of file: expected {what}"
        if a == 1:  # c frames promised by the header on line d
            return (f"unexpected end of file: expected {what} in frame {b + 1} "
                    f"(the header on line {d} says {c} frames, the file holds {b})")
        return (f"unexpected end of file: expected {what} in frame {b + 1} "
                f"(its body count on line {d} says {c} bod{'y' if c == 1 else 'ies'})")
    if code == _FIELDS:
        return f"expected {b} field{'s' if b > 1 else ''}, found {a}"
    if code == _NONNUM:
        return f"field {a} is not a number" + (f" (expected {_WHAT[b]})" if b < 4 and a == 1 else "")
    if code == _JOINTS:
        return f"joint count {a}, expected {b}"
    if code == _NEGATIVE:
        return f"negative count {a}"
    if code == _TRAILING:
        return f"content after the last frame (the header says {a} frames)"
    if code == _RANGE:
        return f"{_INT_WHAT[b]} out of range (larger than 2**63 - 1, the int64 limit; it would wrap)"
    if code == _FRAMES:
        return (f"frame count {a} is impossible: the {c} bytes after it hold at most {b} frames "
                f"(each frame needs at least a {MIN_FRAME_BYTES}-byte body-count line)")
    if code == _NONFINITE:
        return f"field {a} ({'xyz'[a - 1]}) is not a finite float32 number (it overflows to inf or is NaN)"
    return f"parser error code {code}"


def parse_skeleton(data, path="<bytes>") -> Skeleton:
    """Parse the bytes of one ``.skeleton`` file.

    Args:
        data: ``bytes`` or a uint8 array of the whole file.
        path: name used in error messages.

    Returns:
        :class:`Skeleton` with every body record.

    Raises:
        SkeletonFormatError: malformed content (file, 1-based line, what was expected),
            including out-of-range integers, non-finite coordinates and a frame count the
            file cannot hold.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    max_records = int(np.count_nonzero(buf == 10)) // (NUM_JOINTS + 2) + 1
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    words = np.frombuffer(buf, dtype=np.uint64, count=buf.size // 8)
    # Valid bytes only (the usual case): count fields 8 bytes at a time. Otherwise the
    # byte-by-byte scan finds the offending field and line.
    fast = bool(_all_valid(buf))
    status, line, a, b, c, d, n_frames, n_rec, frame, slot, body_id, xyz = _parse_kernel(
        buf, words, fast, max_records, _POW10, _CLASS)
    if status != _OK:
        raise SkeletonFormatError(path, line, _error_message(status, a, b, c, d))
    return Skeleton(int(n_frames), frame[:n_rec].copy(), slot[:n_rec].copy(), body_id[:n_rec].copy(),
                    xyz[:n_rec].copy())


def read_skeleton(path) -> Skeleton:
    """Read and parse one ``.skeleton`` file (see :func:`parse_skeleton`).

    Raises:
        SkeletonFormatError: malformed content; OSError: unreadable or not a regular file.
    """
    return parse_skeleton(read_regular_file(path), path)


def read_frame_count(path) -> int:
    """The header frame count of a ``.skeleton`` file, reading only its first line.

    The count is checked against the file's size (every frame needs at least a
    :data:`MIN_FRAME_BYTES`-byte body-count line), so the value returned can size an
    array without trusting a bogus header; the rest of the file is not checked.

    Raises:
        SkeletonFormatError: an empty file, a first line that is not one non-negative
            integer, or a count the file is too small to hold (line 1).
        OSError: unreadable or not a regular file.
    """
    import os
    import stat

    nonblocking = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | nonblocking)) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file; only regular files are read")
        size = info.st_size
        head = handle.read(64)
    first = head.split(b"\n", 1)[0].strip()
    if not head.strip():
        raise SkeletonFormatError(path, 1, "unexpected end of file: expected the frame count")
    if not first.isdigit():
        raise SkeletonFormatError(path, 1, f"expected the frame count (one non-negative integer), found {first[:20]!r}")
    count = int(first)
    after = size - (head.index(b"\n") + 1 if b"\n" in head else len(head))
    room = (after + 1) // MIN_FRAME_BYTES
    if count > room:
        raise SkeletonFormatError(path, 1, _error_message(_FRAMES, count, room, after))
    return count


def select_bodies(skeleton: Skeleton, policy="listed", max_bodies=2) -> np.ndarray:
    """Place body records into ``max_bodies`` slots.

    Args:
        skeleton: parsed file.
        policy: ``"listed"`` (reference) or ``"tracked"``; see the module docstring.
        max_bodies: number of slots M.

    Returns:
        (3, n_frames, 25, M) float32 metres; empty slots and frames are zero.

    Raises:
        ValueError: unknown policy.
    """
    if policy not in BODY_POLICIES:
        raise ValueError(f"body policy must be one of {', '.join(BODY_POLICIES)}, not {policy!r}")
    out = np.zeros((3, skeleton.n_frames, NUM_JOINTS, max_bodies), dtype=np.float32)
    if skeleton.frame.size == 0:
        return out
    if policy == "listed":
        keep = skeleton.slot < max_bodies
        out[:, skeleton.frame[keep], :, skeleton.slot[keep].astype(np.int64)] = skeleton.xyz[keep].transpose(0, 2, 1)
        return out
    ids, first = np.unique(skeleton.body_id, return_index=True)
    ids = ids[np.argsort(first, kind="stable")]  # order of first appearance
    motion = []
    for bid in ids:
        seq = skeleton.xyz[skeleton.body_id == bid].astype(np.float64)
        motion.append(float(seq.var(axis=0).sum()) if len(seq) > 1 else 0.0)
    order = np.argsort(-np.asarray(motion), kind="stable")[:max_bodies]
    for m, k in enumerate(order):
        sel = skeleton.body_id == ids[k]
        frames = skeleton.frame[sel]
        # A body listed twice in one frame (malformed but possible): the first listing wins.
        frames, uniq = np.unique(frames, return_index=True)
        out[:, frames, :, m] = skeleton.xyz[sel][uniq].transpose(0, 2, 1)
    return out


def load_xyz(path, policy="listed", max_bodies=2):
    """Read one file and select its bodies.

    Returns:
        (xyz (3, n_frames, 25, M) float32, n_frames int, n_bodies int distinct body IDs).

    Raises:
        SkeletonFormatError: malformed file.
    """
    sk = read_skeleton(path)
    return select_bodies(sk, policy, max_bodies), sk.n_frames, sk.n_bodies
