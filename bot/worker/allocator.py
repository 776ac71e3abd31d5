"""How glibc's allocator treats large buffers in the worker's two processes (elsewhere, e.g. musl
or macOS: each call does nothing).

glibc serves a buffer over its mmap threshold (128 KB at first) with pages of its own and hands
them back when it is freed; after such a free it raises the threshold (up to 32 MB), and from then
on it serves buffers of that size from the heap, which keeps what is freed. The two processes want
opposite things:

- The render process (keep_freed_buffers): a preview's mix allocates a few dozen buffers of
  1.7-3.4 MB (19 s of mono or stereo float32), by three threads at once. Mapped anew each time,
  every buffer is paid for again in page faults; kept in the heap, they are reused: the render of
  a default answer took 3-10% less CPU, its page faults 31,418 -> 50 (BENCHMARKS.md, issue 22).
- The sampling process (return_large_buffers): a pass allocates its tables once (attention
  memory, noise, biases: 5-40 MB each at a burst's 168 rows) and thousands of small per-step
  tensors. With the threshold raised, the heap kept the largest pass's tables after the burst
  (the worker held ~440 MiB instead of ~380). A fixed 4 MB threshold returns the tables at the
  end of their pass and keeps the per-step tensors (<= 0.5 MB) in the heap: the same CPU.
"""

from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
RENDER_MMAP_THRESHOLD_BYTES = 32 * 2**20  # the renderer's buffers below this come from the heap...
RENDER_TRIM_THRESHOLD_BYTES = 32 * 2**20  # ...and this much freed heap is kept for the next request
SAMPLER_MMAP_THRESHOLD_BYTES = 4 * 2**20  # the sampler's tables above this are handed back when freed


def keep_freed_buffers() -> None:
    """The render process: keep freed buffers in the heap for the next preview."""
    _mallopt(M_MMAP_THRESHOLD, RENDER_MMAP_THRESHOLD_BYTES)
    _mallopt(M_TRIM_THRESHOLD, RENDER_TRIM_THRESHOLD_BYTES)


def return_large_buffers() -> None:
    """The sampling process: hand a pass's large tables back to the system when they are freed."""
    _mallopt(M_MMAP_THRESHOLD, SAMPLER_MMAP_THRESHOLD_BYTES)


def _mallopt(parameter: int, value: int) -> None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: its own allocator as it is
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(parameter, value)
