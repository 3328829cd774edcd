"""A fixed number of training samples per epoch (``training.samples_per_epoch``)."""

import torch


class EpochSamples(torch.utils.data.Dataset):
    """``n`` items of ``dataset`` per epoch: shuffled passes over it, repeated and cut to length.

    Call ``shuffle()`` before each epoch; it draws from torch's global generator, whose
    state the checkpoint keeps.
    """

    reordered_each_epoch = True  # loader workers must start again to see the new order

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n
        self.order = [index % len(dataset) for index in range(n)]

    def shuffle(self):
        """Draw this epoch's order."""
        passes = -(-self.n // len(self.dataset))
        self.order = torch.cat([torch.randperm(len(self.dataset)) for _ in range(passes)])[: self.n].tolist()

    @property
    def accepts_seeds(self):
        """``(index, seed)`` pairs pass the seed on to a dataset that takes them (see ``unet3d.data.loaders``)."""
        return getattr(self.dataset, "accepts_seeds", False)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index, seed = index
            return self.dataset[(self.order[index], seed)]
        return self.dataset[self.order[index]]
