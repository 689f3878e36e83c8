"""The ikem store: one Zarr v3 directory (default) or one HDF5 file, same names inside.

Layout (DESIGN.md §3; format ``names.STORE_FORMAT``, version ``names.STORE_VERSION``):

============================  ==========================  ==========================================
path                          shape, dtype                meaning
============================  ==========================  ==========================================
``raw/xyz``                   (N, 3, T_max, 25, M) f4     camera-space metres, zero-padded, never cut
``raw/frames``                (N,) int32                  frame count from the file header
``raw/bodies``                (N,) int8                   distinct bodies seen in the file
``raw/label``                 (N,) int16                  action class, 0-based
``raw/setup`` ... ``replication``  (N,) int16             ids from the file name (-1: none)
``raw/name``                  (N,) bytes ``S``            sample name, ASCII (see :meth:`Store.names`)
``splits/<benchmark>/train``  (n,) int64                  sample indices; same for ``val``
``modalities/<name>``         (N, 3, 50, 25, M) f4        written by ``ikem-data modalities``
============================  ==========================  ==========================================

Root attributes: ``format``, ``version``, ``ikem_version``, ``layout`` (the skeleton
layout's name, :mod:`ikem_data.layouts`; absent in stores from before it: Kinect v2) and
one dict per stage (``gendata``, ``modalities``, ...), each ``{"complete": bool,
"params": {...}, ...}``.
A stage marks itself complete last, after all of its data is flushed.

Both back ends expose arrays that support numpy slicing for reading and writing
(``store["raw/xyz"][i:j] = block``). Strings are stored as fixed-width ASCII bytes
(numpy ``S``), which round-trip in zarr v3 and in HDF5 alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import numpy as np

from ikem_data import __version__
from ikem_data.files import NoRoomError, check_regular, ensure_room
from ikem_data.names import STORE_FORMAT, STORE_VERSION
from ikem_data.store_check import EVERY_CHUNK, StoreError, check_content, check_hdf5_links, fingerprint, scan_zarr

__all__ = ["Store", "StoreError", "NoRoomError", "open_store", "remove_path", "is_hdf5_path", "to_jsonable"]

#: What a store keeps when a write fails for lack of room (every stage saves its progress
#: after its data, so a rerun continues after the last write that went through).
KEPT = "the store stays resumable (everything written before is kept)"


class _RoomChecked:
    """An h5py dataset of a writable store whose writes first make sure the disk (and the
    file-size limit) can take them: HDF5 told ENOSPC or EFBIG in the middle of a write
    reports it and then crashes the process (segfault at close), so it must never be told.
    Everything but ``[...] =`` goes to the dataset unchanged."""

    def __init__(self, dataset, store):
        self._dataset = dataset
        self._store = store

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def __getitem__(self, key):
        return self._dataset[key]

    def __len__(self):
        return len(self._dataset)

    def __setitem__(self, key, value):
        nbytes = np.asarray(value).nbytes
        if np.ndim(value) == 0:  # a scalar broadcast: at most the whole dataset
            nbytes = max(nbytes, int(np.prod(self._dataset.shape)) * self._dataset.dtype.itemsize)
        self._store.reserve(nbytes)
        self._dataset[key] = value

HDF5_SUFFIXES = (".h5", ".hdf5")
MODES = ("r", "r+", "w")


def to_jsonable(value):
    """Return ``value`` with numpy scalars/arrays, tuples and paths made plain JSON types.

    Raises:
        TypeError: a value that has no JSON form (the message names its type).
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) and not isinstance(value, (str, bytes)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"store attributes must be JSON-able; got {type(value).__name__}: {value!r}")


def is_hdf5_path(path) -> bool:
    """True when ``path`` names an HDF5 store (suffix ``.h5`` or ``.hdf5``)."""
    return Path(path).suffix.lower() in HDF5_SUFFIXES


class Attributes(MutableMapping):
    """Root attributes of a store: a dict-like view with JSON-able values.

    Setting a key writes it to the store at once. Values are cast with
    :func:`to_jsonable` (numpy scalars become ``int``/``float``). In HDF5 every value is
    kept as a JSON string, so nested dicts read back as dicts in both back ends.
    """

    def __init__(self, raw, kind):
        self._raw = raw
        self._kind = kind

    def __getitem__(self, key):
        value = self._raw[key]
        if self._kind == "hdf5":
            if isinstance(value, bytes):
                value = value.decode()
            return json.loads(value)
        return value

    def __setitem__(self, key, value):
        value = to_jsonable(value)
        if self._kind == "hdf5":
            self._raw[key] = json.dumps(value)
        else:
            self._raw[key] = value

    def __delitem__(self, key):
        del self._raw[key]

    def __iter__(self):
        return iter(list(self._raw.keys()))

    def __len__(self):
        return len(list(self._raw.keys()))

    def to_dict(self) -> dict:
        """A plain ``dict`` copy of all attributes."""
        return {key: self[key] for key in self}

    def __repr__(self):
        return f"Attributes({self.to_dict()!r})"


class Store:
    """An open ikem store (zarr directory or HDF5 file). Use :func:`open_store`.

    Attributes:
        path: the store's location.
        kind: ``"zarr"`` or ``"hdf5"``.
        mode: ``"r"``, ``"r+"`` or ``"w"`` as opened.

    A context manager; :meth:`close` releases the HDF5 file (a no-op for zarr). A Store
    pickles as "reopen this path", so it can be handed to worker processes, which then
    open it lazily on their side (never pass an open h5py file across a spawn).
    """

    def __init__(self, path, kind, root, mode, files=None):
        self.path = Path(path)
        self.kind = kind
        self.mode = mode
        self._root = root
        #: zarr: ``{relative path: (size, mtime_ns)}`` of every file when opened; HDF5: the file's.
        self.files = files or {}
        self._pending = 0  # HDF5: bytes written since the last flush (may still sit in its cache)
        self._reserving = threading.Lock()

    # -- context manager, pickling ---------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Flush and close (HDF5); safe to call twice."""
        if self.kind == "hdf5" and self._root is not None:
            try:
                self._root.close()
            except Exception:  # already closed
                pass
        self._root = None

    def flush(self):
        """Write everything so far to disk (HDF5 keeps data and metadata in memory until then;
        zarr writes each chunk and attribute as it goes)."""
        if self.kind == "hdf5" and self._root is not None:
            self.reserve(0)
            self._root.flush()
            self._pending = 0

    def reserve(self, nbytes) -> None:
        """Make sure the disk can take ``nbytes`` more (plus what HDF5 may hold unflushed).

        Raises:
            NoRoomError: not enough free space, or past the file-size limit; one line
                naming the store, saying it stays resumable and what to free.
        """
        with self._reserving:  # the modalities stage writes its arrays from several threads
            self._pending += int(nbytes)
            try:
                ensure_room(self.path, self._pending, "store", KEPT)
            except NoRoomError:
                self._pending -= int(nbytes)
                raise

    def __reduce__(self):
        return (open_store, (str(self.path), "r" if self.mode == "r" else "r+"))

    def __repr__(self):
        return f"Store({str(self.path)!r}, kind={self.kind!r}, mode={self.mode!r})"

    @property
    def root(self):
        """The underlying ``zarr.Group`` or ``h5py.File`` (raises when closed)."""
        if self._root is None:
            raise ValueError(f"store {self.path} is closed")
        return self._root

    # -- attributes and arrays -------------------------------------------------------
    @property
    def attrs(self) -> Attributes:
        """Root attributes (dict-like, JSON-able values)."""
        return Attributes(self.root.attrs, self.kind)

    def __getitem__(self, name):
        """The array (or group) at ``name``, e.g. ``store["raw/xyz"]``.

        Raises:
            KeyError: nothing at ``name``; the message names the store.
        """
        if name not in self:
            raise KeyError(f"{name!r} not found in store {self.path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node = self.root[name]
        if self.kind == "zarr" and self.mode != "r" and hasattr(node, "with_config"):
            # Every chunk is stored, also one equal to the fill value (zarr skips those by
            # default): the open check can then tell a deleted chunk from an unwritten one.
            node = node.with_config({"write_empty_chunks": True})
        elif self.kind == "hdf5" and self.mode != "r" and hasattr(node, "dtype"):
            node = _RoomChecked(node, self)
        return node

    def read_into(self, name, start, stop, out):
        """Read rows ``start:stop`` of the array ``name`` into ``out`` (a reused buffer, so a
        long stage does not allocate and fault in fresh memory every step).

        Args:
            out: C-contiguous numpy array of shape ``(stop - start,) + shape[1:]`` and the
                array's dtype.

        Returns:
            ``out``.

        Raises:
            KeyError: nothing at ``name``.
            ValueError: ``out`` has the wrong shape or dtype.
        """
        array = self[name]
        shape = (stop - start,) + tuple(array.shape[1:])
        if out.shape != shape or out.dtype != array.dtype:
            raise ValueError(f"out must be {array.dtype} {shape} for {name}[{start}:{stop}], "
                             f"got {out.dtype} {out.shape}")
        if self.kind == "hdf5":
            array.read_direct(out, source_sel=np.s_[start:stop])
        else:
            from zarr.core.buffer import default_buffer_prototype

            array.get_basic_selection(slice(start, stop),
                                      out=default_buffer_prototype().nd_buffer.from_numpy_array(out))
        return out

    def writer(self, name):
        """The array at ``name`` set up for bulk writes of dense data.

        zarr arrays of a writable store skip their per-chunk "all equal to the fill value?"
        test (``write_empty_chunks``; see :meth:`__getitem__`), which on float chunks cost
        ~20 % of the write time; an all-zero chunk is stored like any other, so a complete
        array has every chunk. HDF5 datasets come back as they are.

        Raises:
            KeyError: nothing at ``name``.
        """
        return self[name]

    def __contains__(self, name) -> bool:
        name = str(name).strip("/")
        if self.kind == "hdf5":
            return name in self.root
        # A zarr v3 node is its folder's zarr.json: one stat, instead of zarr loading the
        # metadata of every group on the way (which made the open check ten times slower).
        return (self.path / name / "zarr.json").is_file() if name else True

    def create_array(self, name, shape, dtype, chunks=None, fill_value=0, overwrite=False, clevel=5):
        """Create an array at ``name`` (intermediate groups are created).

        Args:
            name: path such as ``"raw/xyz"``.
            shape: tuple of ints (zero-length axes allowed).
            dtype: numpy dtype; strings as fixed-width bytes (``"S20"``).
            chunks: chunk shape; ``None`` picks one (the whole array along small axes).
            fill_value: value of unwritten elements (``b""`` for bytes dtypes).
            overwrite: replace an existing array; otherwise an existing name raises.
            clevel: zstd level of zarr arrays (1 is ~6x faster for a similar ratio on
                derived float data); HDF5 arrays always use gzip level 4.

        Returns:
            the new array (numpy slicing for reading and writing).

        Raises:
            ValueError: ``name`` exists and ``overwrite`` is false, or the store is read-only.
        """
        if self.mode == "r":
            raise ValueError(f"store {self.path} is open read-only; cannot create {name!r}")
        name = str(name).strip("/")
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if dtype.kind in "SU":
            fill_value = b"" if dtype.kind == "S" else ""
        if chunks is not None:
            chunks = tuple(max(1, min(int(c), s if s > 0 else 1)) for c, s in zip(chunks, shape))
        if name in self:
            if not overwrite:
                raise ValueError(f"{name!r} already exists in store {self.path}")
            del self.root[name]
        if self.kind == "hdf5":
            kwargs = {}
            if all(s > 0 for s in shape) and shape:
                kwargs = dict(chunks=chunks if chunks is not None else True, compression="gzip",
                              compression_opts=4, shuffle=True, maxshape=(None,) + shape[1:])
            return _RoomChecked(self.root.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill_value,
                                                         **kwargs), self)
        from zarr.codecs import BloscCodec

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fixed-width bytes: "no Zarr V3 specification"
            return self.root.create_array(
                name,
                shape=shape,
                dtype=dtype,
                chunks=chunks if chunks is not None else "auto",
                fill_value=fill_value,
                compressors=BloscCodec(cname="zstd", clevel=int(clevel), shuffle="bitshuffle"),
                config={"write_empty_chunks": True},  # every chunk stored: see __getitem__
            )

    def resize(self, name, length):
        """Change the first axis of the array ``name`` to ``length`` (data kept).

        Raises:
            ValueError: a read-only store, or an HDF5 array created with a zero-size axis.
        """
        if self.mode == "r":
            raise ValueError(f"store {self.path} is open read-only; cannot resize {name!r}")
        array = self[name]
        shape = (int(length),) + tuple(array.shape[1:])
        array.resize(shape)

    # -- splits and helpers ----------------------------------------------------------
    def benchmarks(self) -> list[str]:
        """Names of the benchmarks under ``splits/`` (sorted)."""
        if "splits" not in self:
            return []
        group = self.root["splits"]
        keys = group.keys() if self.kind == "hdf5" else group.group_keys()
        return sorted(str(k) for k in keys)

    def split(self, benchmark, part) -> np.ndarray:
        """Sample indices of ``splits/<benchmark>/<part>`` as int64.

        Args:
            benchmark: e.g. ``"ntu60-xsub"`` (see :meth:`benchmarks`).
            part: ``"train"`` or ``"val"``.

        Raises:
            ValueError: ``part`` is neither ``train`` nor ``val``.
            KeyError: the store has no such benchmark; the message lists those it has.
        """
        if part not in ("train", "val"):
            raise ValueError(f"split part must be 'train' or 'val', not {part!r}")
        name = f"splits/{benchmark}/{part}"
        if name not in self:
            have = ", ".join(self.benchmarks()) or "none"
            raise KeyError(f"benchmark {benchmark!r} not in store {self.path}; it has: {have}")
        return np.asarray(self.root[name][...], dtype=np.int64)

    def problems(self, benchmark=None, modalities=()) -> list[str]:
        """What is wrong with the store's content, read from metadata and small arrays only.

        Checks that ``raw/frames``, ``raw/label``, ``raw/name`` and ``raw/xyz`` agree on N;
        that frames, labels and split indices are integers, frames > 0, labels >= 0, and the
        indices of ``benchmark``'s splits lie in [0, N) without repeats; that each of
        ``modalities`` is (N, 3, t_length, V, M) with the recorded ``t_length`` and one V, M.
        Values inside the big arrays (e.g. NaN) are not read: training and evaluation
        check what they compute.

        Returns:
            one line per problem (empty when none).
        """
        out = []
        n = self["raw/frames"].shape[0] if "raw/frames" in self else None
        for name in ("raw/label", "raw/name", "raw/xyz"):
            if n is not None and name in self and self[name].shape[0] != n:
                out.append(f"{name} has {self[name].shape[0]} entries, raw/frames {n}")
        for name, low in (("raw/frames", 1), ("raw/label", 0)):
            if name not in self:
                continue
            values = np.asarray(self[name][...])
            if not np.issubdtype(values.dtype, np.integer):
                out.append(f"{name} is {values.dtype}, not an integer array")
            elif values.size and values.min() < low:
                out.append(f"{name} holds {values.min()} (sample {int(values.argmin())}); values must be >= {low}")
        for part in ("train", "val") if benchmark is not None else ():
            name = f"splits/{benchmark}/{part}"
            if name not in self:
                continue
            index = np.asarray(self.root[name][...])
            if not np.issubdtype(index.dtype, np.integer):
                out.append(f"{name} is {index.dtype}, not an integer array")
            elif index.size and n is not None and (index.min() < 0 or index.max() >= n):
                out.append(f"{name} holds index {index.max() if index.max() >= n else index.min()} outside [0, {n})")
            elif len(np.unique(index)) != len(index):
                out.append(f"{name} lists a sample more than once")
        t_length = ((self.stage("modalities") or {}).get("params") or {}).get("t_length")
        shapes = {m: tuple(self[f"modalities/{m}"].shape) for m in modalities if f"modalities/{m}" in self}
        for m, shape in shapes.items():
            if len(shape) != 5 or shape[1] != 3 or (n is not None and shape[0] != n) \
                    or (t_length is not None and shape[2] != t_length) or shape[3:] != next(iter(shapes.values()))[3:]:
                out.append(f"modalities/{m} has shape {shape}; expected ({n}, 3, {t_length}, V, M) with the V, M "
                           "of the other modalities")
        return out

    def fingerprint(self, prefix="") -> str:
        """A short digest of what the store holds below ``prefix`` (``"raw/"``,
        ``"modalities/"``; ``""``: everything), which changes when any of it is rewritten.

        zarr: the sizes and modification times of its files, as listed when it was opened.
        HDF5 is one file, whose time changes with any write: ``""`` gives that file's size
        and time; a prefix gives each dataset's shape, dtype, the place and size of every
        chunk in the file, and the values of its 1-D arrays (a few MB at most).
        """
        if self.kind == "zarr" or not prefix:
            return fingerprint(self.files, prefix)
        import hashlib

        import h5py

        digest = hashlib.sha1()
        group = prefix.strip("/")
        names = []
        if group in self.root:
            self.root[group].visititems(lambda n, o: names.append(f"{group}/{n}") if isinstance(o, h5py.Dataset) else None)
        for name in sorted(names):
            dset = self.root[name]
            digest.update(f"{name}\0{dset.shape}\0{dset.dtype}\n".encode())
            if dset.chunks is not None and dset.size:
                for k in range(dset.id.get_num_chunks()):
                    info = dset.id.get_chunk_info(k)
                    digest.update(f"{info.chunk_offset}:{info.byte_offset}:{info.size}\n".encode())
            if dset.ndim == 1:
                digest.update(np.ascontiguousarray(dset[...]).tobytes())
        return digest.hexdigest()[:16]

    def names(self, start=0, stop=None) -> list[str]:
        """Sample names ``raw/name[start:stop]`` decoded to ``str``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = self.root["raw/name"][start:stop]
        return [v.decode("ascii") if isinstance(v, bytes) else str(v) for v in values]

    def stage(self, name) -> dict | None:
        """The stage dict ``attrs[name]`` (e.g. ``"gendata"``), or ``None`` when absent."""
        attrs = self.attrs
        return attrs[name] if name in attrs else None

    def is_complete(self, stage="gendata") -> bool:
        """True when ``attrs[stage]["complete"]`` is true."""
        info = self.stage(stage)
        return bool(info and info.get("complete"))


def _check_format(store):
    attrs = store.attrs
    fmt = attrs.get("format")
    if fmt != STORE_FORMAT:
        store.close()
        raise ValueError(f"{store.path} is not an ikem store (format {fmt!r}, expected {STORE_FORMAT!r})")
    version = attrs.get("version")
    if version != STORE_VERSION:
        store.close()
        raise ValueError(f"{store.path} has store version {version!r}; this ikem reads version {STORE_VERSION}")


def remove_path(path) -> None:
    """Remove a file, a link (never what it points to) or a folder tree; nothing if absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _looks_like_store(path) -> bool:
    try:
        with open_store(path, "r", check=False):
            return True
    except Exception:
        return False


def open_store(path, mode="r", check=True) -> Store:
    """Open or create an ikem store.

    Args:
        path: a zarr directory, or an HDF5 file when it ends in ``.h5``/``.hdf5``.
        mode: ``"r"`` read, ``"r+"`` read/write an existing store, ``"w"`` create a new
            empty store (an existing ikem store at ``path`` is replaced, a link to one
            removed, never its target; anything else there is refused). The new store
            is made as ``<path>.creating`` and renamed into place with its format
            attributes written, so ``path`` never holds a half-created store.
        check: in modes ``r``/``r+``, check the content (:func:`ikem_data.store_check.
            check_content`: dtypes, shapes, chunks, value ranges) of every complete stage
            (True), of the stages named (e.g. ``("gendata",)``: a writer about to replace
            the others), or not at all (False). What the files *are* is always checked
            (regular files and folders only, plain HDF5 datasets): nothing is opened that
            could block or lead elsewhere.

    Returns:
        :class:`Store` with ``format``, ``version`` and ``ikem_version`` set (mode ``w``).

    Raises:
        FileNotFoundError: mode ``r``/``r+`` and nothing at ``path``.
        ValueError: an unknown mode; ``path`` holds something that is not an ikem store
            (or another store version); mode ``w`` over a non-store file or folder.
        StoreError (a ValueError): a file in the store is not a regular file or folder,
            or its content fails the check; one line naming the array and what to do.
    """
    path = Path(path)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    hdf5 = is_hdf5_path(path)
    if mode == "w":
        if path.exists():
            empty_dir = path.is_dir() and not any(path.iterdir())
            if not empty_dir and not _looks_like_store(path):
                raise ValueError(f"{path} exists and is not an ikem store; refusing to overwrite it")
            remove_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created under a temporary name and renamed once its format attributes are in, so
        # an interruption never leaves at `path` something that is not yet an ikem store
        # (which a rerun or --overwrite would then have to refuse).
        creating = path.with_name(path.name + ".creating")
        remove_path(creating)
        if hdf5:
            import h5py

            root = h5py.File(creating, "w")
        else:
            import zarr

            root = zarr.open_group(str(creating), mode="w", zarr_format=3)
        new = Store(creating, "hdf5" if hdf5 else "zarr", root, mode)
        new.attrs["format"] = STORE_FORMAT
        new.attrs["version"] = STORE_VERSION
        new.attrs["ikem_version"] = __version__
        new.attrs[EVERY_CHUNK] = True  # see store_check: a missing chunk is then always damage
        new.close()
        os.replace(creating, path)
        store = open_store(path, "r+")
        store.mode = mode
        return store

    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    files = None
    if hdf5:
        try:  # before h5py opens it: a named pipe would block the open forever
            st = check_regular(path, "HDF5 store")
        except OSError as exc:
            raise StoreError(f"{exc}; an HDF5 store is one regular file") from None
        files = {path.name: (st.st_size, st.st_mtime_ns)}
    else:
        if not path.is_dir():
            raise ValueError(f"{path} is not an ikem store (a zarr store is a folder; this is "
                             f"{_kind(path)})")
        try:
            files = scan_zarr(path)  # what every file is, before zarr opens any of them
        except StoreError as exc:
            exc.is_ikem_store = _zarr_format(path) == STORE_FORMAT
            raise
    try:
        if hdf5:
            import h5py

            root = h5py.File(path, mode)
        else:
            import zarr

            if "zarr.json" not in files:
                raise ValueError("no zarr.json")
            root = zarr.open_group(str(path), mode=mode, zarr_format=3)
    except Exception as exc:
        raise ValueError(f"{path} is not an ikem store ({exc})") from None
    store = Store(path, "hdf5" if hdf5 else "zarr", root, mode, files)
    _check_format(store)
    try:
        if hdf5:
            check_hdf5_links(path, root)
        if check:
            stages = None if check is True else tuple(check)
            # A job opens its store several times (~8 for knn): the content of files whose
            # sizes and times are those of a store that passed already is not checked again.
            key = (str(path.resolve()), fingerprint(files), stages)
            if key not in _CHECKED:
                check_content(store, None if hdf5 else files, stages=stages)
                _CHECKED.add(key)
    except StoreError as exc:
        store.close()
        exc.is_ikem_store = True
        raise
    except BaseException:
        store.close()
        raise
    return store


def _zarr_format(path):
    """The ``format`` attribute of the zarr folder ``path``'s root metadata (None: unreadable)."""
    from ikem_data.files import read_regular_file

    try:
        meta = json.loads(read_regular_file(Path(path) / "zarr.json", "zarr metadata"))
        return meta.get("attributes", {}).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _kind(path) -> str:
    from ikem_data.files import kind_of

    try:
        return kind_of(os.stat(path).st_mode)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


#: ``(store path, fingerprint of its files, stages)`` that passed :func:`check_content` in this process.
_CHECKED: set = set()


class StoreWatch:
    """What a job saw of its store when it started: :meth:`verify` says whether it still holds.

    Attributes:
        path: the store.
        fingerprint: sizes and modification times of its files at the start
            (:meth:`Store.fingerprint`), recorded in checkpoints and results.
    """

    def __init__(self, path):
        self.path = Path(path)
        with open_store(path, "r") as store:
            self.fingerprint = store.fingerprint()

    def verify(self) -> None:
        """Raise when the store's files changed since the job started (a writer that ignored
        the lock: another ikem without it, a copy, a hand edit).

        Raises:
            StoreError: the store changed; the job's results would mix old and new data.
        """
        with open_store(self.path, "r", check=False) as store:
            now = store.fingerprint()
        if now != self.fingerprint:
            raise StoreError(f"store {self.path} changed while this job read it (fingerprint {self.fingerprint} "
                             f"-> {now}); its results would mix old and new data, so none were written: rerun "
                             "the job once the store is no longer being written")


@contextlib.contextmanager
def reading(path, what="store"):
    """A job's hold on the store it reads: the shared lock (:func:`ikem_data.locks.shared`:
    writers are refused while it is held) and a :class:`StoreWatch` taken under it.

    Yields:
        the :class:`StoreWatch`; call ``verify()`` before writing results.

    Raises:
        LockedError: a process is writing the store. StoreError, FileNotFoundError,
            ValueError: see :func:`open_store`.
    """
    from ikem_data.locks import shared

    if not Path(path).exists():  # no lock file beside a store that is not there
        raise FileNotFoundError(f"no store at {path}")
    with shared(path, what):
        yield StoreWatch(path)
