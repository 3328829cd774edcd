"""Data loaders: seeded batches, and worker processes released on every way out of a loop."""

import math
import re
import weakref
from contextlib import contextmanager

import torch
from monai.data import DataLoader, pad_list_data_collate
from monai.data.utils import set_rnd
from torch.utils.data import DistributedSampler, Sampler

from unet3d.errors import UserError

SEED_RANGE = 2**31
# How a DataLoader re-raises a worker's exception: its type, then the worker's traceback as text.
WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+")


class SeededSampler(Sampler):
    """Indices (shuffled or in order), each paired with a seed for that item's random transforms.

    Order and seeds come from the loader generator's seed (the training loop sets it each
    epoch), not from its state, so they do not depend on the number of workers, on whether
    workers persist between epochs, or on whether the run was resumed.

    Under data-parallel training it plays ``DistributedSampler``'s part: every process draws
    the same order and takes every ``world_size``-th item from its ``rank``, so process
    ``r``'s k-th batch holds the items a single process would put in its k-th batch of
    ``world_size`` times the size. With ``pad`` the order is first padded by repeating its
    start, so that every process gets the same number of batches.

    With ``samples`` (``training.samples_per_epoch``) an epoch holds that many items:
    shuffled passes over the dataset, repeated and cut to length, drawn here as the order is,
    so that loader workers can stay from one epoch to the next.

    Args:
        length: number of items.
        shuffle: draw a new order each pass.
        generator: the loader's generator.
        rank, world_size: this process's share of the items.
        pad: pad to a multiple of ``world_size`` (training) rather than give some processes one item less.
        samples: items per epoch (default: ``length``, each item once).
    """

    def __init__(self, length, shuffle, generator, rank=0, world_size=1, pad=True, samples=None):
        self.length = length
        self.samples = samples or length
        self.shuffle = shuffle
        self.generator = generator
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self._seed, self._passes = None, 0

    def __len__(self):
        if self.pad:
            return math.ceil(self.samples / self.world_size)
        return len(range(self.rank, self.samples, self.world_size))

    def __iter__(self):
        seed = self.generator.initial_seed()
        self._passes = self._passes + 1 if seed == self._seed else 0
        self._seed = seed
        draw = torch.Generator().manual_seed(hash((seed, self._passes)) % 2**63)
        order = repeated_passes(self.length, self.samples, self.shuffle, draw)
        seeds = torch.randint(0, SEED_RANGE, (self.samples,), generator=draw)
        pairs = list(zip(order.tolist(), seeds.tolist()))
        if self.pad and self.world_size > 1:
            pairs += pairs[: len(self) * self.world_size - self.samples]
        return iter(pairs[self.rank :: self.world_size])


def repeated_passes(length, samples, shuffle=True, generator=None):
    """``samples`` indices below ``length``: passes over them (each shuffled with ``generator``, torch's global one
    by default), repeated and cut to length."""
    passes = math.ceil(samples / length)
    return torch.cat([torch.randperm(length, generator=generator) if shuffle else torch.arange(length)
                      for _ in range(passes)])[:samples]


class EpochSamples(torch.utils.data.Dataset):
    """``n`` items of a ``dataset`` that takes no seeds per epoch (``training.samples_per_epoch``): shuffled passes
    over it, repeated and cut to length. (``SeededSampler`` draws these for datasets that take seeds.)

    ``set_epoch`` (``start_epoch`` calls it) draws each epoch's order from torch's global
    generator, whose state the checkpoint keeps.
    """

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n
        self.order = [index % len(dataset) for index in range(n)]

    def set_epoch(self, epoch):
        """Draw the order of a new epoch (from the global generator: ``epoch`` itself is not needed)."""
        self.order = repeated_passes(len(self.dataset), self.n).tolist()

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.dataset[self.order[index]]


def make_loader(dataset, batch_size, shuffle, num_workers, seed=0, pin_memory=None,
                persistent_workers=None, prefetch_factor=None, shard=None, samples=None):
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
        shard: ``(rank, world_size)`` under data-parallel training: this process's share,
            padded to equal length when shuffling (training), exact otherwise (validation).
        samples: items per epoch (``training.samples_per_epoch``): repeated shuffled passes cut
            to length. A dataset that takes no seeds is wrapped in ``EpochSamples`` for this.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = num_workers > 0
    options = {"prefetch_factor": prefetch_factor or 2} if workers else {}
    seeded = getattr(dataset, "accepts_seeds", False)
    if samples and not seeded:
        dataset = EpochSamples(dataset, samples)
    rank, world_size = shard or (0, 1)
    if seeded:
        options["sampler"] = SeededSampler(len(dataset), shuffle, generator, rank, world_size, pad=shuffle,
                                           samples=samples)
    elif world_size > 1:
        options["sampler"] = DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed, drop_last=False)
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


def batches_per_epoch(n_items, batch_size, samples=None):
    """Batches of a training epoch of ``make_loader`` in one process: ``samples`` items (default: each of the
    ``n_items`` once) in batches of ``batch_size``."""
    return math.ceil((samples or n_items) / batch_size)


def start_epoch(loader, seed, epoch):
    """Seed ``loader``'s order and random transforms for ``epoch`` from the run seed alone.

    The loader's sampler (``SeededSampler``) draws the order and each item's augmentation
    seed from the generator's seed, so an epoch's batches depend only on ``(seed, epoch)``:
    not on the number of workers, nor on whether the run was resumed. MONAI seeds the random
    transforms of a worker-less loader once when it is built, so they are reseeded here too.
    A sampler or dataset with ``set_epoch`` (``DistributedSampler``, ``EpochSamples``) is told the epoch.
    """
    loader.generator.manual_seed((seed * 1_000_003 + epoch) % 2**63)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if loader.num_workers == 0:
        set_rnd(loader.dataset, int(torch.randint(2**31, (1,), generator=loader.generator)))
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


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
    except UserError as error:
        keep = False
        one_line = from_worker(error)
        if one_line is error:
            raise
        raise one_line from None
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            _shutdown(iterator)
            loader._iterator = None  # a persistent loader starts new workers next time
        del iterator


def from_worker(error):
    """A UserError a loader worker raised, as its one line: the loader re-raises it with the worker's traceback."""
    text = str(error)
    if not WORKER_ERROR.match(text):
        return error
    last = text.rstrip().splitlines()[-1]  # "unet3d.errors.UserError: <message>"
    return UserError(last.split(": ", 1)[1] if ": " in last else last)


def _shutdown(iterator):
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
