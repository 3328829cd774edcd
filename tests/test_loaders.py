"""Loader workers are released on a normal end and on an exception inside the loop."""

import multiprocessing

import pytest
import torch

from unet3d.data.loaders import batches, make_loader


class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        return torch.tensor([index])


def test_workers_are_released_after_a_full_pass():
    loader = make_loader(Numbers(), batch_size=4, shuffle=True, num_workers=2)
    with batches(loader) as iterator:
        assert sum(len(batch) for batch in iterator) == 64
    assert multiprocessing.active_children() == []


def test_workers_are_released_when_the_loop_raises():
    loader = make_loader(Numbers(), batch_size=4, shuffle=False, num_workers=2)
    with pytest.raises(RuntimeError, match="boom"):
        with batches(loader) as iterator:
            for index, _ in enumerate(iterator):
                assert multiprocessing.active_children()
                if index == 2:
                    raise RuntimeError("boom")
    assert multiprocessing.active_children() == []
