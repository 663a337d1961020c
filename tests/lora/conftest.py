"""One intra-op thread for the LoRA tests: their tensors are tiny, and on a busy shared CPU
each multi-threaded region can wait a whole scheduler slice for its second thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
