"""glibc malloc tuning for a server that decodes large images: give freed pixels back to the OS.

Why resident memory stayed ≈ 4 GiB high after a burst of big images: Pillow stores pixels in
blocks of at most 16 MiB (`PIL.Image.core.get_block_size()`) from malloc/calloc and frees them
as soon as the image goes (`get_blocks_max()` is 0: it caches none), so Pillow holds nothing;
glibc does. glibc serves allocations over M_MMAP_THRESHOLD (128 KiB at first) with their own
mmap, unmapped on free, but freeing such a chunk raises the threshold to that chunk's size (up to
32 MiB) and the trim threshold to twice that. After the first decoded image is freed, every
later pixel block comes from the heap arenas instead, one per decoding thread; freed blocks
inside an arena stay resident (only a heap's top is ever returned) and are reused only by the
threads that land on that arena, so RSS stays up (a second 16×4 burst added 0.7 GiB more).
Arrays over 32 MiB, such as whole-image numpy copies, always get their own mmap: not the problem.

Fixing M_MMAP_THRESHOLD at 1 MiB turns that dynamic rise off: every allocation of 1 MiB or more
is its own mapping and goes back to the OS when freed; smaller ones (request bodies, strings)
stay on the heap and pay no system call. The cost is page faults on fresh mappings: one 5000²
PNG decodes in 0.32–0.35 s either way, twelve on six threads in 2.3 s instead of 2.2 s.

Measured with `python -m loadtests.image_burst` (concurrent chats, 4 fully transparent 5000²
PNGs each; RSS of the server's process tree, baseline ≈ 3.1 GiB; demo model, 2 cores), growth at
the peak / 2 s after the burst:

    before decoding to need (all pixels held), 16×4, nothing        +9.1 GiB / +4.3 GiB
      same, MALLOC_ARENA_MAX=2 alone                                +7.9 GiB / +4.0 GiB
      same, mallopt(M_MMAP_THRESHOLD, 1 MiB): this                  +7.1 GiB / +39 MiB
    decoding to need under the pixel budget, 32×4, nothing          +1.2 GiB / +1.2 GiB
      same, this                                                    +1.2 GiB / +25 MiB

Limiting arenas does not help (the retained memory is big freed blocks, which no arena returns)
and adds nothing once the threshold is fixed, so only the threshold is set. The peak is the
decoded images that requests hold while they wait; shrinking it is the decoder's job, not
malloc's. mallopt() rather than MALLOC_* variables because it travels with the code instead of
with each launcher (Dockerfile, chart, `make serve`); vLLM's EngineCore and workers, forked
from this process, inherit it. An operator's MALLOC_* variables or glibc.malloc tunables win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt(3) parameter number, from glibc's <malloc.h>.
M_MMAP_THRESHOLD = -3
# Every allocation this large or larger gets its own mmap and goes back to the OS on free.
MMAP_THRESHOLD = 1024 * 1024

# Set by an operator, these win: glibc reads them at start-up and we do not override them.
_OPERATOR_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)


def _operator_tuned() -> bool:
    """Whether glibc's malloc was configured from the environment at start-up."""
    return any(name in os.environ for name in _OPERATOR_SETTINGS) or (
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    )


def _glibc() -> ctypes.CDLL | None:
    """The C library of this process if it is glibc (musl, macOS and Windows have no mallopt
    with these meanings)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc if version() else None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD) -> None:
    """Fix glibc's mmap threshold (why: see the module docstring) for this process and the
    processes it forks later, such as vLLM's EngineCore; call it first thing in `main()`, before
    anything large is allocated. A no-op off glibc and when the operator set a MALLOC_*
    variable or a glibc.malloc tunable."""
    libc = _glibc()
    if libc is None or _operator_tuned():
        return
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1:  # 1 is success; else defaults stay
        log.warning("mallopt(M_MMAP_THRESHOLD) refused", extra={"value": mmap_threshold})
