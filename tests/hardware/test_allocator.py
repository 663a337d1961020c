"""limit_heap_growth: freed large blocks go back to the system instead of staying in the heap."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from senior_intern.hardware.allocator import limit_heap_growth

CHILD = """
import json, psutil, torch
from senior_intern.hardware.allocator import limit_heap_growth

def retained():
    # 8 MiB blocks made and freed twice after a 32 MiB one raised glibc's moving threshold
    big = torch.ones(8 << 20); del big
    rss = psutil.Process().memory_info().rss
    for _ in range(2):
        t = torch.ones(2 << 20); t2 = torch.ones(16 << 10); del t  # 8 MiB, then a small block above it
    kept = psutil.Process().memory_info().rss - rss
    del t2
    return kept

before = retained()
was_set = limit_heap_growth()
after = retained()
print(json.dumps({"before": before, "after": after, "set": was_set, "again": limit_heap_growth()}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_above_the_threshold_leave_the_resident_size() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["set"] and report["again"]
    assert report["before"] >= 6 << 20, report  # the default: the freed 8 MiB stays resident in the heap
    assert report["after"] < 2 << 20, report


def test_it_is_safe_to_call_more_than_once() -> None:
    assert limit_heap_growth() == limit_heap_growth()
