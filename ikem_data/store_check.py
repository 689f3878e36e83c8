"""The one check every store gets when it is opened (:func:`ikem_data.store.open_store`).

Two parts, both from metadata, directory listings and the small 1-D arrays; no chunk of
the big arrays is read, so the check costs a walk of the store (see
``bench/store_check.py`` for figures):

1. *What the files are* (:func:`scan_zarr`, :func:`check_hdf5_links`): every entry of a
   zarr store is a regular file or a folder (a named pipe standing in for a chunk would
   block the reader forever, a device would never end); an HDF5 store is a regular file
   holding plain datasets only: no virtual datasets (their sources can vanish and read as
   fill values), no external storage, no soft or external links (which lead out of the
   file).
2. *What the content is* (:func:`check_content`): the layout, dtypes and shapes of the
   arrays against the recorded parameters, their chunk grid, every chunk of an array of a
   complete stage present (zarr does not store a chunk that was never written, and reads
   it as the fill value: a deleted chunk of ``modalities/joint`` would read as zeros), and
   the value ranges of ``raw/frames`` (1..T_max) and ``modalities/valid_length``
   (0..T_max).

Arrays of a stage that is still running are checked for dtype and shape only: their
chunks come as the stage goes, and the stage's own rerun rules decide what is kept.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat

import numpy as np

from ikem_data.files import kind_of
from ikem_data.names import MODALITIES

#: Attributes of a store (``zarr.json``) and a chunk may not be larger than this: a bigger
#: file is not one ikem wrote, and reading it whole could take all memory.
MAX_METADATA_BYTES = 256 << 20
#: A chunk file may exceed its array chunk's raw size by at most this (codec headers).
CHUNK_SLACK_BYTES = 1 << 16
#: Folder depth below the store root that a zarr store never exceeds (``modalities/joint/c/i/0/0/0/0``).
MAX_DEPTH = 16

#: Root attribute of stores made since zarr arrays keep every chunk (``Store.__getitem__``):
#: in an older zarr store a chunk equal to the fill value was never stored, so only the
#: float arrays (``raw/xyz``, ``modalities/*``; never all zero in a real chunk) are held
#: to having every chunk there.
EVERY_CHUNK = "every_chunk_stored"

RAW_DTYPES = {"xyz": "float32", "frames": "int32", "bodies": "int8", "label": "int16", "setup": "int16",
              "camera": "int16", "subject": "int16", "replication": "int16"}


class StoreError(ValueError):
    """A store that ikem refuses to read: a file in it is not what it should be, or its
    content disagrees with itself. The message is one line naming the store, the array or
    file, and what to do."""


def _rebuild(path, stage):
    if stage == "modalities":
        return f"rebuild it with `ikem-data modalities --out {path} --overwrite`"
    return f"rebuild it with `ikem-data gendata ... --out {path} --overwrite`"


def scan_zarr(path) -> dict[str, tuple[int, int]]:
    """Every file of the zarr store ``path``: ``{relative path: (size, mtime_ns)}``, from one
    walk of its folders (``os.scandir``; a symbolic link is followed with one ``stat``).

    Raises:
        StoreError: an entry is a named pipe, device or socket, a link to nothing, or the
            folders nest deeper than :data:`MAX_DEPTH`.
    """
    files = {}
    root = os.fspath(path)

    def walk(folder, rel, depth):
        if depth > MAX_DEPTH:
            raise StoreError(f"store {root}: {rel} nests deeper than a store's {MAX_DEPTH} levels "
                             "(a link loop?); it is not an ikem store")
        with os.scandir(folder) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                # The entry's type comes with the listing (d_type): folders cost no stat, a
                # file one (its size and mtime: the fingerprint), a link one that follows it.
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, name, depth + 1)
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    raise StoreError(f"store {root}: {name} is a link to nothing; {_rebuild(root, _stage_of(name))}") \
                        from None
                if stat.S_ISREG(st.st_mode):
                    files[name] = (st.st_size, st.st_mtime_ns)
                elif stat.S_ISDIR(st.st_mode):  # a link to a folder
                    walk(entry.path, name, depth + 1)
                else:
                    raise StoreError(f"store {root}: {name} is {kind_of(st.st_mode)}; a store holds only regular "
                                     f"files and folders (reading it could block forever); remove it and "
                                     f"{_rebuild(root, _stage_of(name))}")

    walk(root, "", 0)
    return files


def _stage_of(name) -> str:
    return "modalities" if str(name).startswith("modalities/") else "gendata"


def fingerprint(files, prefix="") -> str:
    """A short digest of the sizes and modification times of the files under ``prefix``
    (``scan_zarr``'s result; an HDF5 store passes its one file). It changes whenever a
    chunk is rewritten, added or removed."""
    digest = hashlib.sha1()
    for name in sorted(files):
        if name.startswith(prefix):
            size, mtime = files[name]
            digest.update(f"{name}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:16]


def check_hdf5_links(path, root) -> None:
    """Refuse an HDF5 store holding anything but groups and plain datasets (hard links).

    Raises:
        StoreError: a soft or external link, a virtual dataset, or a dataset whose data
            lives in external files; the message names it.
    """
    import h5py

    def visit(group, prefix):
        for key in group:
            name = f"{prefix}{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                what = "an external link to another file" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise StoreError(f"store {path}: {name} is {what}; an ikem store holds plain datasets only, "
                                 f"{_rebuild(path, _stage_of(name))}")
            node = group[key]
            if isinstance(node, h5py.Group):
                visit(node, f"{name}/")
            elif isinstance(node, h5py.Dataset):
                if node.is_virtual:
                    raise StoreError(f"store {path}: {name} is a virtual dataset (its sources can vanish and read "
                                     f"as fill values); an ikem store holds plain datasets only, "
                                     f"{_rebuild(path, _stage_of(name))}")
                if node.external:
                    raise StoreError(f"store {path}: {name} keeps its data in external files; an ikem store holds "
                                     f"plain datasets only, {_rebuild(path, _stage_of(name))}")
            else:
                raise StoreError(f"store {path}: {name} is a {type(node).__name__}, not a group or dataset")

    visit(root, "")


# -- content ----------------------------------------------------------------------------------------


def array_names(store, prefix):
    """Names of the arrays below group ``prefix`` (recursive)."""
    if prefix not in store:
        return []
    group = store.root[prefix]
    if store.kind == "hdf5":
        import h5py

        names = []
        group.visititems(lambda n, obj: names.append(f"{prefix}/{n}") if isinstance(obj, h5py.Dataset) else None)
        return sorted(names)
    names = [f"{prefix}/{k}" for k in group.array_keys()]
    for key in group.group_keys():
        names.extend(array_names(store, f"{prefix}/{key}"))
    return sorted(names)


def _chunk_shape(array):
    chunks = getattr(array, "chunks", None)
    return tuple(int(c) for c in chunks) if chunks else None


def _missing_chunks(store, name, array, files):
    """``(missing chunk keys (first few), how many missing, how many expected)`` of ``array``."""
    shape = tuple(int(s) for s in array.shape)
    chunks = _chunk_shape(array)
    if not shape or any(s == 0 for s in shape):
        return [], 0, 0
    if chunks is None:  # an HDF5 contiguous dataset: its storage is allocated on the first write
        allocated = store.kind != "hdf5" or array.id.get_storage_size() > 0
        return ([] if allocated else ["?"]), int(not allocated), 1
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks)]
    expected = math.prod(grid)
    if store.kind == "hdf5":
        have = array.id.get_num_chunks()
        return ([] if have >= expected else ["?"]), max(0, expected - have), expected
    meta = array.metadata
    prefix = f"{name}/"
    present = {key[len(prefix):] for key in files if key.startswith(prefix)}
    missing = []
    count = 0
    for coords in np.ndindex(*grid):
        key = meta.encode_chunk_key(coords)
        if key not in present:
            count += 1
            if len(missing) < 3:
                missing.append(key)
    return missing, count, expected


def _oversized_chunk(name, array, files):
    """The first chunk file of ``array`` larger than its raw chunk size plus codec slack, or None."""
    chunks = _chunk_shape(array)
    if chunks is None:
        return None
    limit = math.prod(chunks) * array.dtype.itemsize + CHUNK_SLACK_BYTES
    prefix = f"{name}/c"
    for key, (size, _) in files.items():
        if key.startswith(prefix) and size > limit:
            return key, size, limit
    return None


def check_content(store, files=None, stages=None) -> None:
    """Refuse a store whose content disagrees with itself (see the module docstring).

    Args:
        store: an open :class:`ikem_data.store.Store`.
        files: :func:`scan_zarr`'s listing of a zarr store (None for HDF5).
        stages: the complete stages to check (``"gendata"`` covers ``raw/`` and
            ``splits/``, ``"modalities"`` its arrays); None: both. A writer about to
            replace a stage leaves it out, so that a damaged stage can be rebuilt.

    Raises:
        StoreError: the first problem found, one line naming the store and the array.
    """
    path = store.path
    gendata = store.stage("gendata") or {}
    mods = store.stage("modalities") or {}
    stages = ("gendata", "modalities") if stages is None else stages
    raw_done = bool(gendata.get("complete")) and "gendata" in stages
    mods_done = bool(mods.get("complete")) and "modalities" in stages
    if not mods_done:
        mods = {}

    def fail(message, stage="gendata"):
        raise StoreError(f"store {path} is damaged or was edited by hand: {message}; {_rebuild(path, stage)}")

    if raw_done:  # the checks of the small arrays and splits that Store.problems words
        for benchmark in store.benchmarks() or [None]:
            problems = store.problems(benchmark)
            if problems:
                fail(problems[0])

    arrays = {}
    for name in array_names(store, "raw") + array_names(store, "splits") + array_names(store, "modalities"):
        arrays[name] = store[name]
    # Presence of what a complete stage wrote.
    if raw_done:
        # What every reader needs; raw/xyz is the modalities stage's (checked there: a store
        # may be made by write_synthetic_store with modalities only), labels the jobs'.
        for field in ("frames", "name"):
            if f"raw/{field}" not in arrays:
                fail(f"raw/{field} is missing although gendata is complete")
    if mods_done:
        for m in list((mods.get("params") or {}).get("names") or MODALITIES):
            if f"modalities/{m}" not in arrays:
                fail(f"modalities/{m} is missing although the modalities stage is complete", "modalities")

    # Dtypes, shapes and the chunk grid.
    xyz = arrays.get("raw/xyz")
    n = int(arrays["raw/frames"].shape[0]) if "raw/frames" in arrays else None
    if xyz is not None:
        shape = tuple(xyz.shape)
        if len(shape) != 5 or shape[1] != 3:
            fail(f"raw/xyz has shape {shape}, not (N, 3, T, V, M)")
        joints = _layout_joints(store)
        if joints is not None and shape[3] != joints:
            fail(f"raw/xyz has {shape[3]} joints but the store's layout {store.attrs.get('layout')!r} has {joints}")
        bodies = (gendata.get("params") or {}).get("max_bodies")
        if raw_done and bodies is not None and shape[4] != int(bodies):
            fail(f"raw/xyz has {shape[4]} body slots but gendata recorded max_bodies={bodies}")
        if raw_done and gendata.get("t_max") is not None and shape[2] != int(gendata["t_max"]):
            fail(f"raw/xyz has {shape[2]} frames but gendata recorded t_max={gendata['t_max']}")
    for field, dtype in RAW_DTYPES.items():
        a = arrays.get(f"raw/{field}")
        if a is None:
            continue
        if a.dtype != np.dtype(dtype):
            kind = "an integer array" if np.dtype(dtype).kind == "i" and a.dtype.kind != "i" else dtype
            fail(f"raw/{field} is {a.dtype}, not {kind}")
        if field != "xyz" and len(a.shape) != 1:
            fail(f"raw/{field} has shape {tuple(a.shape)}, not (N,)")
    for name, a in arrays.items():
        if n is not None and name.startswith("raw/") and a.shape[0] != n:
            fail(f"{name} has {a.shape[0]} entries, raw/frames {n}")
        if name.startswith("splits/") and (a.dtype != np.int64 or len(a.shape) != 1):
            fail(f"{name} is {a.dtype} {tuple(a.shape)}, not an int64 index list")
        chunks = _chunk_shape(a)
        if chunks is not None and (len(chunks) != len(a.shape) or min(chunks, default=1) < 1):
            fail(f"{name} has chunk shape {chunks} for shape {tuple(a.shape)}", _stage_of(name))
    if raw_done and gendata.get("n_samples") is not None and n != int(gendata["n_samples"]):
        fail(f"raw/frames has {n} entries but gendata recorded {gendata['n_samples']} samples")
    t_length = (mods.get("params") or {}).get("t_length")
    for m in MODALITIES:
        a = arrays.get(f"modalities/{m}")
        if a is None:
            continue
        want = (n, 3, t_length, *(tuple(xyz.shape[3:]) if xyz is not None else (None, None)))
        got = tuple(a.shape)
        if len(got) != 5 or any(w is not None and g != w for g, w in zip(got, want)):
            fail(f"modalities/{m} has shape {got}; expected ({n}, 3, {t_length}, V, M) with the V, M of raw/xyz",
                 "modalities")
        if a.dtype != np.float32:
            fail(f"modalities/{m} is {a.dtype}, not float32", "modalities")
    valid = arrays.get("modalities/valid_length")
    if valid is not None and (valid.dtype != np.int32 or tuple(valid.shape) != (n,)):
        fail(f"modalities/valid_length is {valid.dtype} {tuple(valid.shape)}, not int32 ({n},)", "modalities")

    # Every chunk of a complete stage's arrays: a listing, not a read.
    every = store.kind == "hdf5" or bool(store.attrs.get(EVERY_CHUNK))
    for name, a in arrays.items():
        stage = _stage_of(name)
        if not (mods_done if stage == "modalities" else raw_done):
            continue
        if not every and name != "raw/xyz" and (stage != "modalities" or name == "modalities/valid_length"):
            continue
        missing, count, expected = _missing_chunks(store, name, a, files)
        if count:
            where = f" ({', '.join(missing)}{', ...' if count > len(missing) else ''})" if missing != ["?"] else ""
            fail(f"{name} lacks {count} of its {expected} chunks{where}, which would read as "
                 f"{a.fill_value if store.kind == 'zarr' else 'fill values'}", stage)
        if files is not None:
            big = _oversized_chunk(name, a, files)
            if big:
                fail(f"{big[0]} is {big[1]} bytes, more than a chunk of {name} can take ({big[2]})", stage)

    # Value ranges of the small arrays the kernels and samplers trust.
    if n and "raw/frames" in arrays and xyz is not None and raw_done:
        frames = np.asarray(arrays["raw/frames"][...])
        t_max = int(xyz.shape[2])
        bad = np.flatnonzero((frames < 1) | (frames > t_max))
        if bad.size:
            k = int(bad[0])
            fail(f"raw/frames[{k}] = {int(frames[k])} ({store.names(k, k + 1)[0]}), outside 1..{t_max} "
                 f"(the frames raw/xyz holds)")
        if valid is not None and mods_done:
            # The stage counts the valid frames of the padded sequence: at most T_max (and
            # at most the sample's frames when, as gendata writes it, the padding is zero).
            lengths = np.asarray(valid[...])
            bad = np.flatnonzero((lengths < 0) | (lengths > t_max))
            if bad.size:
                k = int(bad[0])
                fail(f"modalities/valid_length[{k}] = {int(lengths[k])} ({store.names(k, k + 1)[0]}), outside "
                     f"0..{t_max} (the frames raw/xyz holds)", "modalities")


def _layout_joints(store):
    from ikem_data.layouts import store_layout

    try:
        return store_layout(store).num_joints
    except (ValueError, KeyError):
        return None
