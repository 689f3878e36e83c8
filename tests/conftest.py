"""Shared fixtures: the real recordings in ../shared/data, skipped cleanly when absent."""

import os
from pathlib import Path

import pytest

# Kernels compile once per test session into a writable cache.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

SHARED_DATA = Path(os.environ.get("IKEM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NTU_DIR = SHARED_DATA / "ntu_rgbd_skeleton"
META_DIR = SHARED_DATA / "ntu_rgbd_meta"


@pytest.fixture(scope="session")
def ntu_dir():
    """Folder of the 12 real NTU RGB+D `.skeleton` files (skip when absent)."""
    if not NTU_DIR.is_dir() or not any(NTU_DIR.glob("*.skeleton")):
        pytest.skip(f"real NTU files not found in {NTU_DIR}")
    return NTU_DIR


@pytest.fixture(scope="session")
def kinect_dir():
    """Folder of the MIT-licensed Kinect v2 CSV captures: the copy packaged with ikem, which
    every installation has (the same bytes as ../shared/data's)."""
    from ikem_data.demo_clips import capture_dir

    return capture_dir()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one torch thread, and much faster when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
