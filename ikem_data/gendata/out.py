"""What is at a ``gendata`` run's ``out``, and what the run does with it.

:func:`inspect_out` classifies the path (absent, empty, an ikem store, a damaged store,
something foreign); :func:`decide` says whether an existing store is complete, continued
(``resume``) or made with other arguments (replaced only with ``overwrite``): the rerun
rules of :mod:`ikem_data.gendata.run`. A new store is built under :func:`partial_path` and
renamed to ``out`` (:func:`ikem_data.gendata.write.create_store`);
:func:`ikem_data.store.remove_path` clears a leftover or a replaced store.
"""

from __future__ import annotations

import json

from ikem_data.gendata.plan import fingerprint
from ikem_data.store import StoreError, is_hdf5_path, open_store

#: Parameters that do not identify a store: what to do with a bad file, and the files
#: still to come (a rerun after fixing, removing or adding one continues).
_NOT_IDENTITY = ("on_error", "n_inputs", "inputs_sha1", "files_sha1")
#: Root attributes every ikem store has; a store holding only these holds nothing.
_BASE_ATTRS = {"format", "version", "ikem_version", "every_chunk_stored"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _params_diff(old, new):
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _identity(params):
    return {k: v for k, v in params.items() if k not in _NOT_IDENTITY}


def partial_path(out):
    """Where a new store is built before it is renamed to ``out`` (same folder, same suffix)."""
    return out.with_name(f"{out.stem}.ikem-partial{out.suffix}")


def _blank_zarr_group(path):
    """A zarr folder holding one group's metadata and nothing else (at most ikem's base
    attributes): what an interruption right after a store's first metadata write leaves.
    None when it is not such a folder; "damaged" when its metadata cannot be read."""
    entries = [p.name for p in path.iterdir()]
    # zarr writes metadata to "<name>.<uuid>.partial" and renames it: a leftover is noise.
    if "zarr.json" not in entries or any(e != "zarr.json" and not e.startswith("zarr.json.") for e in entries):
        return None
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "damaged"
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    return "blank" if set(meta.get("attributes") or {}) <= _BASE_ATTRS else None


def inspect_out(out):
    """Classify what is at ``out``.

    Returns:
        ``(kind, store, reason)``: kind ``"absent"``, ``"empty"`` (nothing of value: an
        empty folder or file, or a store holding nothing; replaced without asking),
        ``"store"`` (an ikem store, returned open ``r+``), ``"damaged"`` (an HDF5 file or
        zarr store whose metadata cannot be read; replaced only with ``overwrite``) or
        ``"foreign"`` (never replaced).
    """
    if not out.exists() and not out.is_symlink():
        return "absent", None, ""
    if (out.is_dir() and not any(out.iterdir())) or (out.is_file() and out.stat().st_size == 0):
        return "empty", None, ""
    try:
        store = open_store(out, "r+")
    except StoreError as exc:  # an ikem store whose files or content fail the open check
        return ("damaged" if exc.is_ikem_store else "foreign"), None, str(exc)
    except (ValueError, FileNotFoundError, OSError) as exc:
        if out.is_dir():
            blank = _blank_zarr_group(out)
            if blank:
                return ("empty" if blank == "blank" else "damaged"), None, str(exc)
        elif out.is_file() and is_hdf5_path(out):
            with open(out, "rb") as handle:
                if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return "damaged", None, str(exc)
        return "foreign", None, str(exc)
    if store.stage("gendata") is None and not list(store.root.keys()) and set(store.attrs) <= _BASE_ATTRS:
        store.close()
        return "empty", None, ""
    return "store", store, ""


def decide(store, old, params, samples):
    """``("complete" | "resume" | "other", why)`` for an existing store's gendata stage."""
    if old is None:
        return "other", "it has no gendata stage"
    old_params = old.get("params", {})
    if _identity(old_params) != _identity(params):
        return "other", _params_diff(_identity(old_params), _identity(params))
    if old.get("complete"):
        edited = old_params.get("files_sha1") not in (None, params.get("files_sha1"))  # None: made before ikem kept it
        if old_params.get("inputs_sha1") == params["inputs_sha1"] and not edited:
            return "complete", ""
        if old_params.get("inputs_sha1") == params["inputs_sha1"]:
            return "other", ("an input file changed in place since it was made (same names, other sizes or "
                             "modification times)")
        return "other", (f"the inputs changed: {old_params.get('n_inputs')} files then, {len(samples)} now, "
                         f"or other names, labels or splits")
    done = int(old.get("next_file", 0))
    if old.get("done_sha1") is None:  # made by ikem 0.1, which kept no fingerprint of the files done
        if old_params.get("inputs_sha1") != params["inputs_sha1"]:
            return "other", "the inputs changed since it was started"
    elif done > len(samples) or fingerprint(samples[:done]) != old["done_sha1"]:
        return "other", f"the first {done} inputs, already processed, are not the same files now"
    if "raw/name" not in store:
        return "other", "its raw arrays are missing"
    names = store["raw/name"]
    if int(old.get("written", 0)) + len(samples) - done > names.shape[0]:
        return "other", f"{len(samples) - done} files still to do, more than the store has room for"
    width = names.dtype.itemsize
    if any(len(s["name"].encode()) > width for s in samples[done:]):
        return "other", f"a file still to do has a name longer than the store's {width} bytes"
    return "resume", ""
