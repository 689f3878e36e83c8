"""pyskl annotation pickles: read them without running their code, and write them.

Format (kennymckormick/pyskl ``tools/data/README.md``): a dict with two keys,

* ``split``: ``{split name: [frame_dir, ...]}``, e.g. ``xsub_train``, ``xsub_val``;
* ``annotations``: a list of dicts, each with ``frame_dir`` (str, here an NTU name
  ``SsssCcccPpppRrrrAaaa``), ``label`` (int, 0-based), ``keypoint`` (M, T, V, C) float
  array (persons, frames, joints, coordinates; float16 in pyskl's own files, metres) and
  ``total_frames`` (int, = T). 2D files (``*_hrnet.pkl``) also carry ``keypoint_score``,
  ``img_shape`` and ``original_shape`` and are refused: ikem needs V = 25, C = 3.

Safety: a pickle can run any code while it loads. :class:`SafeUnpickler` resolves only
the few globals this format needs (numpy's array, dtype and scalar reconstructors, the
latin-1 bytes decoder of protocol-2 pickles, ``list``) and refuses every other class,
naming it, before anything of it runs.

Split names: pyskl's NTU-60 pickle has ``xsub_*``/``xview_*``, its NTU-120 pickle
``xsub_*``/``xset_*``; they map to ikem's ``ntu60-xsub``/``ntu60-xview`` or
``ntu120-xsub``/``ntu120-xset`` (:data:`PYSKL_BENCHMARKS`). Any other ikem benchmark is
written as ``<benchmark with _ for ->_<part>`` (``ntu60_xview_train`` in an NTU-120
file), which reads back to the same benchmark.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import stat
from pathlib import Path

import numpy as np

from ikem_data.formats import ntu
from ikem_data.layouts import KINECT_V2_25, get_layout
from ikem_data.quoting import quote  # a value nested 10^5 deep made repr() die in RecursionError

#: pyskl's split prefix -> ikem benchmark, per dataset (its ntu_preproc.py writes these).
PYSKL_BENCHMARKS = {
    "ntu60": {"xsub": "ntu60-xsub", "xview": "ntu60-xview"},
    "ntu120": {"xsub": "ntu120-xsub", "xset": "ntu120-xset"},
}
PARTS = ("train", "val")
NUM_JOINTS = get_layout(KINECT_V2_25).num_joints  # 25: NTU's Kinect v2 joints
REQUIRED_KEYS = ("frame_dir", "label", "keypoint", "total_frames")
#: Keys pyskl documents for an annotation; anything else is refused as not this format.
KNOWN_KEYS = frozenset(REQUIRED_KEYS) | {"keypoint_score", "img_shape", "original_shape"}
NUM_CLASSES = {"ntu60": ntu.NTU60_MAX_ACTION, "ntu120": ntu.NTU120_MAX_ACTION}
_F32_MAX = float(np.finfo(np.float32).max)


class PysklError(ValueError):
    """A pyskl pickle that cannot be read or is not this format; the message names the file."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a class or function outside :class:`SafeUnpickler`'s list."""


# -- the restricted unpickler ------------------------------------------------------------

class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` inside a pickle: only :func:`_reconstruct` accepts it
    (calling ``ndarray(shape)`` directly could allocate without limit)."""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray may only be rebuilt through numpy's _reconstruct")


_NDARRAY = _NdarrayMarker()


def _numpy_private(name):
    """numpy's own reconstructor ``name`` (numpy 2 moved ``numpy.core`` to ``numpy._core``)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return getattr(multiarray, name, None) or getattr(numeric, name)


def _check_dtype(dtype):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"refused numpy data of dtype {dtype!r} (only numbers are read)")


def _reconstruct(subtype, shape, dtype):
    # What ndarray.__reduce__ emits: an empty array that the BUILD opcode then fills with
    # __setstate__ (shape, dtype, bytes). Object arrays are refused later, by dtype.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct called with arguments numpy never writes")
    return np.empty((0,), dtype=np.int8)


def _scalar(dtype, data=None):
    _check_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar without its bytes")
    return _numpy_private("scalar")(dtype, data)


def _frombuffer(buffer, dtype, shape, order):
    # Protocol 5 writes arrays as (_frombuffer, (bytes, dtype, shape, order)).
    _check_dtype(dtype)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"numpy _frombuffer with order {order!r}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _latin1(text, encoding="utf-8", errors="strict"):
    # Protocol 2 writes each bytes object as _codecs.encode(str, "latin1"); nothing else.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is read only as the latin-1 bytes of protocol 2")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
    ("builtins", "list"): list,  # the annotation list of a streamed file (see write_pickle)
}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals of :data:`_ALLOWED`.

    Everything a pyskl annotation pickle holds is built from pickle's own opcodes (dict,
    list, str, int, float, tuple, bytes) plus numpy arrays, dtypes and scalars; any other
    global (``os.system``, ``builtins.eval``, a class with a ``__reduce__``) raises
    :class:`RefusedGlobal` before it is imported, so its code never runs.
    """

    def find_class(self, module, name):
        # Python 2 names (protocol < 3 writes builtins as __builtin__), mapped as pickle's own
        # find_class maps them; no Python 3 module has these names, so mapping always is safe.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused to load {module}.{name}: a pyskl annotation pickle holds only dicts, "
                                f"lists, strings, numbers and numpy arrays, and loading anything else could run "
                                f"code from the file") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of a pyskl pickle")


def _open_regular(path):
    """Open ``path`` for reading, refusing a FIFO or device (which could block or never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file; only regular files are read")
        return os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise


def load_pickle(path):
    """Load a pickle with :class:`SafeUnpickler`.

    Raises:
        PysklError: a refused global (the message names it), or a file that is not a
            complete pickle; the message names the file.
        OSError: unreadable, or not a regular file.
    """
    with _open_regular(path) as handle:
        try:
            return SafeUnpickler(handle).load()
        except RefusedGlobal as exc:
            raise PysklError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError) as exc:
            raise PysklError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


# -- reading the format --------------------------------------------------------------------

def split_benchmark(split, dataset):
    """``(benchmark, part)`` of a pyskl split name in a ``dataset`` pickle.

    ``xsub_train`` -> ``("ntu60-xsub", "train")`` (NTU-60) or ``("ntu120-xsub", "train")``
    (NTU-120); ``<ikem benchmark, - as _>_<part>`` -> that benchmark.

    Raises:
        ValueError: any other name (the message lists the accepted ones).
    """
    from ikem_data.names import BENCHMARKS

    prefix, _, part = str(split).rpartition("_")
    if part in PARTS:
        if prefix in PYSKL_BENCHMARKS[dataset]:
            return PYSKL_BENCHMARKS[dataset][prefix], part
        for benchmark in BENCHMARKS:
            if benchmark.replace("-", "_") == prefix and benchmark.split("-")[0] in ("ntu60", dataset):
                return benchmark, part
    names = ", ".join(f"{p}_{part}" for p in PYSKL_BENCHMARKS[dataset] for part in PARTS)
    raise ValueError(f"split {quote(split)} is not a split of a {dataset} pickle (expected {names})")


def pyskl_split_name(benchmark, part, dataset):
    """The pyskl split name of ``splits/<benchmark>/<part>`` (inverse of :func:`split_benchmark`)."""
    for prefix, name in PYSKL_BENCHMARKS.get(dataset, {}).items():
        if name == benchmark:
            return f"{prefix}_{part}"
    return f"{benchmark.replace('-', '_')}_{part}"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _read_top(path):
    """The pickle's split dict and annotation list, checked at the top level."""
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        raise PysklError(f"{path} holds a {type(obj).__name__}, not a pyskl dict with 'split' and 'annotations'")
    keys = set(obj)
    if keys != {"split", "annotations"}:
        missing = sorted(str(k) for k in {"split", "annotations"} - keys)
        extra = sorted(quote(k) for k in keys - {"split", "annotations"})
        what = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                       f"unexpected {', '.join(extra)}" if extra else ""]))
        raise PysklError(f"{path} is not a pyskl annotation file: its dict must have exactly the keys 'split' "
                         f"and 'annotations' ({what})")
    splits, annotations = obj["split"], obj["annotations"]
    if not isinstance(splits, dict):
        raise PysklError(f"{path}: 'split' is a {type(splits).__name__}, not a dict of lists of frame_dir")
    for name, members in splits.items():
        if not isinstance(name, str) or not isinstance(members, (list, tuple)) \
                or not all(isinstance(m, str) for m in members):
            raise PysklError(f"{path}: split {quote(name)} is not a list of frame_dir strings")
    if not isinstance(annotations, list):
        raise PysklError(f"{path}: 'annotations' is a {type(annotations).__name__}, not a list")
    if not annotations:
        raise PysklError(f"{path}: 'annotations' is empty")
    return splits, annotations


def _refuse_2d(path, first):
    """Raise when the first annotation is a 2D pose (pyskl's *_hrnet.pkl files)."""
    if not isinstance(first, dict):
        return
    keypoint = first.get("keypoint")
    shape = getattr(keypoint, "shape", ())
    if "keypoint_score" in first or (len(shape) == 4 and shape[-1] == 2):
        joints = f"V={shape[2]} joints, " if len(shape) == 4 else ""
        raise PysklError(f"{path} holds 2D keypoints ({joints}C=2 image coordinates, e.g. pyskl's *_hrnet.pkl "
                         f"HRNet poses); ikem's modalities (bones, torso normal, rotation axes) need the 25 3D "
                         f"Kinect v2 joints of NTU RGB+D: use ntu60_3danno.pkl or ntu120_3danno.pkl")


def plan_samples(path, dataset=None, ignored=frozenset()):
    """The samples of a pyskl pickle, in its annotation order (the file is loaded once, here).

    Args:
        path: the ``.pkl`` file.
        dataset: ``"ntu60"``/``"ntu120"``; ``None`` infers it from the frame_dir ids
            (:func:`ikem_data.formats.ntu.infer_dataset`).
        ignored: frame_dir names to leave out.

    Returns:
        dict with ``dataset``, ``samples`` (dicts: ``name``, ``path`` (where, for
        messages), ``label``, ``ids``, ``split`` (comma-separated ``benchmark/part``
        memberships), ``source`` (the task :func:`load_annotation` takes: the keypoint
        array itself, not a copy)), ``skipped`` (names ignored), ``failed`` (dicts
        ``file``, ``reason``: annotations or split entries that are wrong on their own),
        ``notes``.

    Raises:
        PysklError: the file is not a readable pyskl pickle (a refused class, other
            top-level keys, a 2D file, an unknown split name, a frame_dir outside the
            dataset).
        OSError: unreadable.
    """
    if not Path(path).is_file():
        raise PysklError(f"pyskl pickle {path} does not exist or is not a file")
    ignored = ignored or frozenset()
    splits, annotations = _read_top(path)
    _refuse_2d(path, annotations[0])
    failed, entries, seen = [], [], set()
    for index, ann in enumerate(annotations):
        frame_dir = ann.get("frame_dir") if isinstance(ann, dict) else None
        where = f"{path}: annotation {index}"
        if isinstance(frame_dir, str):
            where += f" ({frame_dir})" if len(frame_dir) <= 40 else f" ({frame_dir[:40]}...)"
        try:
            if not isinstance(ann, dict):
                raise ValueError(f"is a {type(ann).__name__}, not a dict")
            missing = [k for k in REQUIRED_KEYS if k not in ann]
            extra = sorted(quote(k) for k in ann if k not in KNOWN_KEYS)
            if missing or extra:
                raise ValueError("; ".join(filter(None, [f"missing key {', '.join(missing)}" if missing else "",
                                                         f"unexpected key {', '.join(extra)}" if extra else ""])))
            if not isinstance(frame_dir, str):
                raise ValueError(f"frame_dir is a {type(frame_dir).__name__}, not a string")
            sid = ntu.parse_name(frame_dir)
            if frame_dir in seen:
                raise ValueError(f"frame_dir {frame_dir} appears twice")
            if not _is_int(ann["label"]) or not _is_int(ann["total_frames"]):
                raise ValueError(f"label and total_frames must be integers (got {quote(ann['label'])}, "
                                 f"{quote(ann['total_frames'])})")
        except ValueError as exc:
            failed.append(dict(file=where, reason=f"{where}: {exc}"))
            continue
        seen.add(frame_dir)
        entries.append((where, sid, ann))
    if not entries:
        raise PysklError(f"{path}: no usable annotation; first problem: {failed[0]['reason']}")
    ids = [sid for _, sid, _ in entries]
    if dataset is None:
        dataset = ntu.infer_dataset(ids)
    try:
        ntu.check_dataset(ids, dataset)
        parts = {name: split_benchmark(name, dataset) for name in splits}
    except ValueError as exc:
        raise PysklError(f"{path}: {exc}") from None
    known = {a["frame_dir"] for a in annotations  # usable or not
             if isinstance(a, dict) and isinstance(a.get("frame_dir"), str)}
    membership = {}
    for name, members in splits.items():
        benchmark, part = parts[name]
        for j, frame_dir in enumerate(members):
            if frame_dir not in known:
                where = f"{path}: split {quote(name)} entry {j}"
                failed.append(dict(file=where, reason=f"{where}: frame_dir {quote(frame_dir)} has no annotation"))
                continue
            membership.setdefault(frame_dir, {}).setdefault(benchmark, set()).add(part)
    samples, skipped = [], []
    for where, sid, ann in entries:
        frame_dir = ann["frame_dir"]
        if frame_dir in ignored:
            skipped.append(frame_dir)
            continue
        label = int(ann["label"])
        both = [b for b, p in membership.get(frame_dir, {}).items() if len(p) > 1]
        if not 0 <= label < NUM_CLASSES[dataset] or both:
            reason = (f"label {label} is outside 0..{NUM_CLASSES[dataset] - 1} ({dataset})" if not both
                      else f"it is in both the train and the val split of {both[0]}")
            failed.append(dict(file=where, reason=f"{where}: {reason}"))
            continue
        split = ",".join(f"{b}/{p}" for b, ps in sorted(membership.get(frame_dir, {}).items()) for p in sorted(ps))
        samples.append(dict(name=frame_dir, path=where, label=label, split=split,
                            ids=(sid.setup, sid.camera, sid.subject, sid.replication),
                            source=(where, ann["keypoint"], ann["total_frames"])))
    dtypes = sorted({str(getattr(a["keypoint"], "dtype", "?")) for _, _, a in entries})
    notes = [f"from a pyskl pickle: bodies as pyskl selected them (motion-ranked ID tracks, empty frames dropped), "
             f"keypoints {'/'.join(dtypes)}" + (" (float16 rounds a coordinate by up to 2^-11 of its size: "
                                                "<= 1 mm below 4 m, <= 2 mm below 8 m)" if "float16" in dtypes else "")]
    return dict(dataset=dataset, samples=samples, skipped=skipped, failed=failed, notes=notes)


def load_annotation(source, max_bodies, frames_only=False):
    """Check one annotation's keypoints and turn them into ikem's layout.

    Args:
        source: ``(where, keypoint, total_frames)`` from :func:`plan_samples`;
            ``keypoint`` (M, T, 25, 3) float16/32/64 metres.
        max_bodies: slots M of the store; persons beyond it (pyskl orders them by
            motion, most first) are dropped.
        frames_only: check only and return the frame count.

    Returns:
        ``("ok", xyz (3, T, 25, max_bodies) float32, T, persons with any non-zero value)``,
        or ``("ok", T)`` with ``frames_only``.

    Raises:
        ValueError: not a float array, rank other than 4, V != 25 or C != 3, no person or
            frame, ``total_frames`` != T, a value that is not a finite float32; the
            message names the annotation.
    """
    where, keypoint, total_frames = source
    if not isinstance(keypoint, np.ndarray) or keypoint.dtype.kind != "f":
        what = f"dtype {keypoint.dtype}" if isinstance(keypoint, np.ndarray) else type(keypoint).__name__
        raise ValueError(f"{where}: keypoint is {what}; expected a float16 or float32 numpy array")
    if keypoint.ndim != 4:
        raise ValueError(f"{where}: keypoint has rank {keypoint.ndim} (shape {keypoint.shape}); expected 4: "
                         f"(M persons, T frames, V joints, C coordinates)")
    m, t, v, c = keypoint.shape
    if v != NUM_JOINTS or c != 3:
        raise ValueError(f"{where}: keypoint has V={v} joints and C={c} coordinates (shape {keypoint.shape}); "
                         f"ikem needs the 25 3D Kinect v2 joints (V=25, C=3)")
    if m < 1 or t < 1:
        raise ValueError(f"{where}: keypoint holds no person or no frame (shape {keypoint.shape})")
    if int(total_frames) != t:
        raise ValueError(f"{where}: total_frames is {int(total_frames)} but keypoint has T={t} frames")
    bad = ~np.isfinite(keypoint)
    if keypoint.dtype.itemsize > 4:
        bad |= np.abs(keypoint) > _F32_MAX
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: keypoint{list(index)} = {keypoint[index]!r} is not a finite float32")
    if frames_only:
        return ("ok", t)
    xyz = np.zeros((3, t, NUM_JOINTS, max_bodies), dtype=np.float32)
    k = min(m, max_bodies)
    xyz[..., :k] = keypoint[:k].transpose(3, 1, 2, 0)  # (M, T, V, C) -> (C, T, V, M)
    persons = int(np.count_nonzero(keypoint.reshape(m, -1).any(axis=1)))
    return ("ok", xyz, t, persons)


# -- writing -----------------------------------------------------------------------------

class _StreamedList:
    """Pickles as a ``list`` whose items come from an iterator, one at a time.

    ``__reduce__`` returns ``(list, (), None, items)``: pickle writes ``list()`` and then
    APPENDS the items in batches as it draws them, so a file of every sample never needs
    every sample in memory (with the pickler's memo off, see :func:`write_pickle`).
    Plain ``pickle.load`` (pyskl, mmaction2) reads it back as an ordinary list.
    """

    def __init__(self, items):
        self.items = items

    def __reduce__(self):
        return (list, (), None, iter(self.items))


def write_pickle(path, splits, annotations):
    """Write a pyskl annotation pickle to ``path`` (protocol 4), streaming the annotations.

    Args:
        path: the file to write (the caller writes to a temporary name and renames).
        splits: ``{split name: [frame_dir, ...]}``.
        annotations: an iterable of annotation dicts, consumed once.
    """
    with open(path, "wb") as handle:
        pickler = pickle.Pickler(handle, protocol=4)
        # No memo: it would keep a reference to every array written until the end. The
        # structure is a tree (nothing shared, nothing recursive), which is all fast mode needs.
        pickler.fast = True
        pickler.dump({"split": splits, "annotations": _StreamedList(annotations)})


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """:func:`load_annotation` as the reader of ``--input-format pyskl`` (the bodies are pyskl's)."""
    return load_annotation(source, max_bodies, frames_only)
