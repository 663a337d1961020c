"""How a training process's CPU memory is allocated: keep the resident size close to what is live.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a request of at least
``M_MMAP_THRESHOLD`` bytes with its own ``mmap`` (returned to the system on free) and a smaller
one from its heap (kept for reuse). By default the threshold moves: each freed mmapped block
raises it to that block's size (up to 32 MiB), so after the first steps a training step's
activations and temporaries (a few MiB each) all come from the heap, where short-lived
temporaries and the activations kept for backward interleave and leave holes the heap cannot
give back. The resident size then grows well past what is live, by a different amount each
run.

``limit_heap_growth()`` fixes the threshold at ``MMAP_THRESHOLD`` (which also stops it moving):
the large blocks go back to the system when freed, the small ones (the compact base's
dequantisation chunks of ``models.quantized.CHUNK_BYTES``, below it by design) stay on the heap.
Measured on the 2-core machine, 1 x 512 on the 1B class with a compact Q8_0 base: peak RSS 2980
-> 2437 MB at about +5% time per step; the demo model at 1 x 128: 530-840 MB over eight runs
-> 490-550 MB. Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@functools.cache
def limit_heap_growth() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` for this process (once); True when set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
