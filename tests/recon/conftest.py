"""Fixtures shared by the recon tests."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of NeuS runs: their tensors are small, and on a loaded
    2-core machine two threads ran ~8x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
