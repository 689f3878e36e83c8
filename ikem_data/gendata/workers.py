"""The parser processes of ``gendata``: :func:`load_sample` (one input, parsed in a
worker) and :class:`Parsers`, which runs it over the inputs in order, here or in a pool.

Workers are spawned processes (see :meth:`Parsers.map` for why), so everything sent to
them (:func:`load_samples`, :func:`_worker_init`) is a module-level function of this
module, which imports little. A worker exits by itself when the parent dies, even by
SIGKILL (:func:`_watch_parent`), so nothing is left running. The caller bounds the
memory: :meth:`Parsers.map` takes how many finished results may wait for their turn.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ikem_data.gendata.errors import GendataError


def _watch_parent(parent):
    """End this worker as soon as its parent process is gone (runs in a daemon thread).

    ``multiprocessing`` gives every spawned child a sentinel of its parent: the read end
    of a pipe whose only write end the parent holds (on Windows, a handle of the parent
    process). The operating system closes it when the parent exits in any way, SIGKILL
    included, so waiting on it needs no polling and, unlike Linux's PR_SET_PDEATHSIG,
    does not fire when merely the thread that spawned the worker ends.
    """
    parent.join()  # returns once the sentinel signals: the parent has exited
    os._exit(1)


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="ikem-watch-parent", daemon=True).start()


def _where(source):
    """The file a task's source names: the path itself, or the first item of a tuple source."""
    return source if isinstance(source, (str, os.PathLike)) else source[0]


def load_sample(task):
    """Parse one input (runs in a worker).

    Args:
        task: ``(source, reader, body_policy, max_bodies, frames_only)``: the sample's
            source (a file path, or the tuple ``sample["source"]`` whose first item says
            where it is) and the import path of its format's reader module
            (:mod:`ikem_data.formats.registry`), so a worker needs no registry.

    Returns:
        ``("ok", xyz (3, T, V, M) float32, n_frames, n_bodies)``, or with
        ``frames_only`` ``("ok", n_frames)`` (the input is parsed and checked in full, its
        data dropped); ``("error", message)`` for a malformed or unreadable input, the
        message naming the file (and the line or sample where there is one).
    """
    source, reader, body_policy, max_bodies, frames_only = task
    path = _where(source)
    try:
        return importlib.import_module(reader).load_sample(source, max_bodies, frames_only, body_policy)
    except (ValueError, OSError) as exc:  # format errors are ValueErrors naming file and line
        message = str(exc)
        if str(path) not in message:
            message = f"{path}: {message}"
        return ("error", message)


def load_samples(tasks):
    """:func:`load_sample` over a list of tasks (one submission to a worker: a PKU-MMD
    video's segments, which then share the worker's parse of the video)."""
    return [load_sample(task) for task in tasks]


def _group(task):
    """Tasks with the same key go to one worker together (None: alone): the reader's ``group_key``."""
    group_key = getattr(importlib.import_module(task[1]), "group_key", None)
    return None if group_key is None else group_key(task[0])


class Parsers:
    """Runs :func:`load_sample` over tasks in order: here (one worker) or in a process pool.

    The pool is created on first use and shared by both passes; :meth:`close` ends it.
    """

    def __init__(self, workers, fmt):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.reader = fmt.module()  # an InputFormat of ikem_data.formats.registry
        self.pool = None

    def map(self, tasks, count, max_waiting=None):
        """Yield ``(key, result)`` for ``tasks`` (an iterable of ``(key, task)``) in order.

        ``max_waiting`` caps the files in flight (at least one), so that finished results
        waiting for their turn fit the caller's memory budget: the write pass passes how
        many samples fit :data:`ikem_data.gendata.write.WRITE_BUFFER_BYTES`.
        """
        if self.workers == 1 or count <= 1:
            return ((key, load_sample(task)) for key, task in tasks)
        if self.pool is None:
            if hasattr(self.reader, "prepare_workers"):  # e.g. compile a numba parser into the cache once
                self.reader.prepare_workers()
            # spawn, not fork: the parent runs zarr's I/O thread, and forking a threaded
            # process can deadlock the child.
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_init,
                                            mp_context=multiprocessing.get_context("spawn"))
        grouped = hasattr(self.reader, "group_key")
        # Grouped (PKU-MMD): up to 64 segments of a video per submission, two per worker in flight.
        depth = 2 * self.workers * 64 if grouped else 4 * self.workers
        if max_waiting is not None:
            depth = max(1, min(depth, max_waiting))
        return _ordered(self.pool, tasks, depth=depth, group_limit=max(1, depth // (2 * self.workers)))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _ordered(pool, tasks, depth, group_limit=1):
    """Submit tasks with at most ``depth`` in flight; yield ``(key, result)`` in task order.

    Consecutive tasks of one :func:`_group` (at most ``group_limit``) are submitted together.
    """
    inflight = deque()  # (keys, tasks, future of the list of their results)
    in_flight = 0
    batch_keys, batch = [], []

    def submit():
        nonlocal in_flight
        inflight.append((list(batch_keys), list(batch), pool.submit(load_samples, list(batch))))
        in_flight += len(batch)
        batch_keys.clear()
        batch.clear()

    def results():
        nonlocal in_flight
        keys, group, future = inflight.popleft()
        in_flight -= len(group)
        try:
            done = future.result()
        except BrokenProcessPool:
            raise GendataError(f"a parser worker process died while reading {_where(group[0][0])} (killed, or out of "
                               f"memory?); rerun the same command to continue") from None
        return zip(keys, done)

    for key, task in tasks:
        if batch and (_group(task) is None or _group(task) != _group(batch[-1]) or len(batch) >= group_limit):
            submit()
        batch_keys.append(key)
        batch.append(task)
        while in_flight >= depth:
            yield from results()
    if batch:
        submit()
    while inflight:
        yield from results()
