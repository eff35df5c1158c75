import pytest
import torch

from mode.runtime import torch_threads


def test_torch_threads_restores_the_callers_number_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before
