"""Shared fixtures. A tiny untrained network stands in for the shipped weights, which the tests
never need."""

from __future__ import annotations

import pytest
import torch

from model.network import MelodyNet, NetworkConfig, save_checkpoint

# One LSTM layer without dropout (PyTorch warns about dropout on a single layer).
TINY = NetworkConfig(embed=8, hidden=16, layers=1, heads=2, window=64, dropout=0.0)


@pytest.fixture(scope="session")
def tiny_model() -> MelodyNet:
    torch.manual_seed(0)
    return MelodyNet(TINY).eval()


@pytest.fixture(scope="session")
def tiny_weights(tiny_model, tmp_path_factory):
    """A checkpoint file of `tiny_model`, for code that loads weights from a path."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, tiny_model)
    return path
