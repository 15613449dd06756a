"""Random streams of their own for the parts a method adds to a network, so variants pair by seed.

With one seed, a plain model and a method that adds modules to it (ARM's 53 parameters, an
uncertainty head, the auxiliary head) must start from the same network weights and go on with the
same global random stream (dropout). Built from the global stream, an added module would shift
everything drawn after it: the auxiliary head built after ARM, and every dropout mask. Built inside
:func:`own_stream`, it draws from a generator seeded from the run's seed (``torch.initial_seed()``,
which ``seed_everything`` sets) and its name, and the global stream is left as it was.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def own_stream(name: str) -> Iterator[None]:
    """Run the block (e.g. building a module) on a CPU random stream seeded from the run's seed and ``name``.

    Args:
        name: What the block builds (``"arm"``, ``"aux_head"``, ...); each name has its own stream.

    """
    seed = np.random.SeedSequence([torch.initial_seed() % 2**63, zlib.crc32(name.encode())]).generate_state(1)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
