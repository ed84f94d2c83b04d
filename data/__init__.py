"""Datasets: ``--dataset_mode`` picks the class, ``--dataset``/``--dataroot`` the photos
(both registries live in data/registry.py; importing this package registers the classes)."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from data.allface_dataset import AllFaceDataset, DatasetError
from data.registry import DATASET_MODES, adhoc_dataset, dataset_names, get_dataset

__all__ = ["DATASET_MODES", "AllFaceDataset", "DatasetError", "ResumableSampler",
           "create_dataloader", "create_dataset"]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can start in
    the middle of an epoch, so ``--continue_train`` sees exactly the batches it would have."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int):
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return self.num_samples - self.start


def create_dataset(opt):
    """The dataset of ``--dataroot DIR``, else of ``--dataset NAME[,NAME2...]`` (several
    names are concatenated in the order given; --max_dataset_size applies to each)."""
    cls = DATASET_MODES.get(opt.dataset_mode)
    if opt.dataroot:
        return cls(opt, adhoc_dataset(opt.dataroot), opt.dataroot)
    names = dataset_names(opt.dataset)
    entries = [get_dataset(n) for n in names]  # every name is checked before any fitting
    parts = [cls(opt, entry, name) for name, entry in zip(names, entries)]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def _ignore_sigint(_worker_id: int):
    """Ctrl-C in a terminal reaches every process of the group: the workers leave it to the
    training process, which finishes its step, saves and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def create_dataloader(opt, rank: int = 0, world_size: int = 1, dataset=None):
    """Shuffled (seeded per epoch) batches of this process's shard. The loader draws its
    worker seeds from its own generator, so the global RNG is not touched by iterating."""
    dataset = create_dataset(opt) if dataset is None else dataset
    sampler = ResumableSampler(dataset, world_size, rank, shuffle=not opt.serial_batches,
                               seed=opt.seed)
    loader = DataLoader(dataset, batch_size=opt.batchSize, sampler=sampler,
                        num_workers=opt.nThreads, drop_last=False,
                        pin_memory=torch.cuda.is_available(),
                        persistent_workers=opt.nThreads > 0, worker_init_fn=_ignore_sigint,
                        generator=torch.Generator().manual_seed(opt.seed + rank))
    return loader
