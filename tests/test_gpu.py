"""GPU checks: skipped without CUDA (CI has none); run them on a GPU machine."""
import pytest
import torch

from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_bf16_autocast_training_on_gpu(prepared, tiny, tmp_path):
    final = train({**tiny, "tricks.soup.enabled": True, "tricks.grad_clip.enabled": True}, prepared.dir,
                  LocalContext(tmp_path, device="cuda"))
    assert final["val_accuracy"] > 0.6


def test_autocast_is_bf16_on_cuda_and_off_on_cpu():
    from mmsearch.train.evaluate import autocast

    with autocast(torch.device("cuda"), "auto"):
        assert (torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
