"""Data loaders: seeded batches, and worker processes released on every way out of a loop."""

import weakref
from contextlib import contextmanager

import torch
from monai.data import DataLoader, pad_list_data_collate
from torch.utils.data import Sampler

SEED_RANGE = 2**31


class SeededSampler(Sampler):
    """Indices (shuffled or in order), each paired with a seed for that item's random transforms.

    Order and seeds come from the loader generator's seed (the training loop sets it each
    epoch), not from its state, so they do not depend on the number of workers, on whether
    workers persist between epochs, or on whether the run was resumed.

    Args:
        length: number of items.
        shuffle: draw a new order each pass.
        generator: the loader's generator.
    """

    def __init__(self, length, shuffle, generator):
        self.length = length
        self.shuffle = shuffle
        self.generator = generator
        self._seed, self._passes = None, 0

    def __len__(self):
        return self.length

    def __iter__(self):
        seed = self.generator.initial_seed()
        self._passes = self._passes + 1 if seed == self._seed else 0
        self._seed = seed
        draw = torch.Generator().manual_seed(hash((seed, self._passes)) % 2**63)
        order = torch.randperm(self.length, generator=draw) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, SEED_RANGE, (self.length,), generator=draw)
        return iter(list(zip(order.tolist(), seeds.tolist())))


def make_loader(dataset, batch_size, shuffle, num_workers, seed=0, pin_memory=None,
                persistent_workers=None, prefetch_factor=None):
    """A MONAI DataLoader (MetaTensor-aware collation) with seeded order, workers and augmentation.

    Items of different sizes in one batch (whole volumes at native resolution) are padded
    with zeros to the largest.

    Args:
        dataset: a dataset; one that accepts ``(index, seed)`` pairs (``SegmentationDataset``)
            gets a ``SeededSampler``, so a rerun gives the same batches.
        batch_size, shuffle, num_workers: as for ``torch.utils.data.DataLoader``.
        seed: the run seed.
        pin_memory: page-locked batches; default: when CUDA is available.
        persistent_workers: keep workers between epochs; default: when there are workers and
            the dataset takes seeds, so that batches do not depend on the workers' history.
        prefetch_factor: batches each worker loads ahead; default 2 (PyTorch's).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = num_workers > 0
    options = {"prefetch_factor": prefetch_factor or 2} if workers else {}
    seeded = getattr(dataset, "accepts_seeds", False)
    if seeded:
        options["sampler"] = SeededSampler(len(dataset), shuffle, generator)
    else:
        options["shuffle"] = shuffle
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        generator=generator,
        collate_fn=pad_list_data_collate,
        persistent_workers=workers and seeded if persistent_workers is None else persistent_workers,
        **options,
    )


@contextmanager
def batches(loader):
    """Iterate ``loader`` and shut its workers down when the block ends, however it ends.

    A DataLoader iterator left behind by an exception keeps its workers alive until it is
    garbage-collected, which the traceback can prevent for a long time. Persistent workers
    outlive a normal end of the block for the next epoch; they are shut down when the loader
    is released (at the end of training) or at interpreter exit.
    """
    iterator = iter(loader)
    keep = loader.persistent_workers and loader.num_workers > 0
    finalizer = getattr(loader, "_workers_finalizer", None)
    if keep and (finalizer is None or finalizer.peek()[2][0] is not iterator):
        loader._workers_finalizer = weakref.finalize(loader, _shutdown, iterator)
    try:
        yield iterator
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            _shutdown(iterator)
            loader._iterator = None  # a persistent loader starts new workers next time
        del iterator


def _shutdown(iterator):
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
