"""The pretraining DataLoader's shared-memory fit (pretrain/loader.py)."""

import logging
import os

import pytest
import torch

from pretrain import loader


@pytest.fixture
def sharing_strategy():
    before = torch.multiprocessing.get_sharing_strategy()
    yield
    torch.multiprocessing.set_sharing_strategy(before)


def fake_statvfs(total_bytes):
    return lambda path: os.statvfs_result((4096, 4096, total_bytes // 4096, 0, 0, 0, 0, 0, 0, 255))


def test_a_small_dev_shm_switches_to_file_sharing_and_says_how_to_grow_it(monkeypatch, sharing_strategy, caplog):
    # Docker's default 64 MB against 8 workers prefetching batches of 256 CLSA-Single views (~55 MiB each).
    monkeypatch.setattr(loader.os, "statvfs", fake_statvfs(64 * 2**20))
    with caplog.at_level(logging.WARNING, logger="pretrain.loader"):
        assert loader.fit_shared_memory(256 * 3 * (224**2 * 2 + 96**2), num_workers=8)
    assert torch.multiprocessing.get_sharing_strategy() == "file_system"
    assert "/dev/shm holds 64 MiB" in caplog.text and "--shm-size" in caplog.text


def test_a_large_dev_shm_or_no_workers_changes_nothing(monkeypatch, sharing_strategy):
    before = torch.multiprocessing.get_sharing_strategy()
    monkeypatch.setattr(loader.os, "statvfs", fake_statvfs(64 * 2**30))
    assert not loader.fit_shared_memory(256 * 3 * (224**2 * 2 + 96**2), num_workers=8)
    monkeypatch.setattr(loader.os, "statvfs", fake_statvfs(64 * 2**20))
    assert not loader.fit_shared_memory(256 * 3 * (224**2 * 2 + 96**2), num_workers=0)
    assert torch.multiprocessing.get_sharing_strategy() == before
