"""PyTorch data sets over model-grid subjects (training only)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class SequenceDataset(Dataset):
    """BRUNO training sequences: ``length`` random distinct poses of one random subject.

    Light augmentation applied to the whole sequence alike: left-right flip, a shift of
    up to ``max_shift`` pixels and an intensity gamma in [0.9, 1.1].
    """

    def __init__(self, volumes: list[np.ndarray], length: int = 9, epoch_size: int = 10_000,
                 augment: bool = True, max_shift: int = 2, seed: int = 0):
        """``volumes``: model-grid images (P, S, S) of the subjects (``SubjectGrid.image``)."""
        self.images = torch.from_numpy(np.stack(volumes))
        self.length = length
        self.epoch_size = epoch_size
        self.augment = augment
        self.max_shift = max_shift
        self.seed = seed

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n_subjects, n_poses = self.images.shape[:2]
        subject = int(torch.randint(n_subjects, (1,), generator=generator))
        poses = torch.randperm(n_poses, generator=generator)[: self.length]
        images = self.images[subject, poses]
        if self.augment:
            if torch.rand(1, generator=generator) < 0.5:
                images = images.flip(-1)
            shift = torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=generator)
            images = torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(-2, -1))
            gamma = 0.9 + 0.2 * torch.rand(1, generator=generator)
            images = images.clamp(min=0) ** gamma
        return images, poses.float()
