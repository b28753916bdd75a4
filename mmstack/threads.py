"""One torch CPU-thread limiter for every encoder, block and net: set for a block of work, then restored."""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (None or 0: leave it), then restore the process setting."""
    import torch

    before = torch.get_num_threads()
    change = bool(n) and n != before  # set_num_threads is not free: a no-op must not call it per batch
    if change:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)
