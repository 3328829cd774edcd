"""Seeding, and the random number generator states a checkpoint carries so a resumed run repeats exactly."""

import os
import random

import numpy as np
import torch


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and torch (every device); optionally require deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class RandomStates:
    """The states of Python's, NumPy's and torch's generators (CPU, CUDA, a loader's) as a ``state_dict``.

    NumPy's state is kept as a tensor and plain numbers so that ``weights_only`` loading accepts it.
    """

    def __init__(self, generator):
        self.generator = generator

    def state_dict(self):
        """The current states."""
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader": self.generator.get_state(),
        }

    def load_state_dict(self, state):
        """Put the generators back into ``state``."""
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.generator.set_state(state["loader"])
