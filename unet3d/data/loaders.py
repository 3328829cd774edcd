"""Data loaders whose worker processes are released on every way out of a loop."""

from contextlib import contextmanager

import torch
from monai.data import DataLoader


def make_loader(dataset, batch_size, shuffle, num_workers, seed=0, pin_memory=False):
    """A MONAI DataLoader (MetaTensor-aware collation) with seeded shuffling and workers."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
    )


@contextmanager
def batches(loader):
    """Iterate ``loader`` and shut its workers down when the block ends, however it ends.

    A DataLoader iterator left behind by an exception keeps its workers alive until it is
    garbage-collected, which the traceback can prevent for a long time.
    """
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del iterator
