"""`--workers N`: videos prepared in N processes, one whole video per task, one thread each.

Workers share out whole videos, so N of them need at least N videos still to do.

Start-up. Where processes fork (Linux), the parent loads the face detector, dlib's
landmark model and the voice detector once, and every worker inherits them (copy-on-write
memory, nothing read again). Spawned workers each import torch and read the 100 MB
landmark model anew, about 1.6 s of CPU per worker on the 2-core Xeon: as long as
preparing 25 s of video (benchmarks/README.md). Spawn remains where fork is unsafe (macOS,
Windows).

Threads, and what makes the fork safe. A forked child holds none of its parent's threads,
only their locks, as they were. Measured here: a child that ran torch on 2 threads after
its parent had hung (3 of 3 runs); one that called cv2.setNumThreads(1) hung once in 8.
So each worker runs torch, OpenCV and FFmpeg's decoder on one thread, where neither
torch nor OpenCV enters its thread pool (the rule torch's DataLoader workers follow),
and OpenCV is set to one thread in the parent before the fork, which stops its pool
there (restored afterwards). One thread each is also what N workers on N cores want:
more only queue behind the other workers.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys

import cv2

from data import video as videos
from data import video_parts as parts

START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
_INSPECTOR: videos.Inspector | None = None  # a worker's cropper and detector (inherited or made)


def make_parts(todo: list, store, settings: videos.WindowSettings, workers: int):
    """The PartSummary of each video in `todo` as it finishes (any order with workers > 1)."""
    if workers == 1 or len(todo) <= 1:
        inspector = videos.Inspector(settings)
        for source in todo:
            yield parts.write_part(store.path(source), source, inspector)
        return
    global _INSPECTOR
    _INSPECTOR = videos.Inspector(settings) if START_METHOD == "fork" else None
    context = multiprocessing.get_context(START_METHOD)
    tasks = [(source, store.path(source)) for source in todo]
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # stops OpenCV's pool before the fork (see above)
    try:
        with context.Pool(min(workers, len(todo)), _start_worker, (settings,)) as pool:
            yield from pool.imap_unordered(_worker_part, tasks)
    finally:
        _INSPECTOR = None
        cv2.setNumThreads(opencv_threads)


def _start_worker(settings: videos.WindowSettings) -> None:
    global _INSPECTOR
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and stops the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopping the pool must stop us, whatever the parent set
    import torch  # here, not above: `assemble` imports this module and needs no torch
    torch.set_num_threads(1)  # before any torch op (see above)
    if _INSPECTOR is None:  # spawned: a fresh process, nothing inherited
        cv2.setNumThreads(1)
        _INSPECTOR = videos.Inspector(settings)
    _INSPECTOR.decoder_threads = 1


def _worker_part(task) -> parts.PartSummary:
    source, path = task
    return parts.write_part(path, source, _INSPECTOR)
