"""Devices (gatedrnn/devices.py): what --device names, and settings a device cannot hold."""

import pytest
import torch

from gatedrnn import TrainSettings
from gatedrnn.training.devices import check_fits, peak_memory_mb, resolve_device, versions


def test_auto_is_cuda_where_there_is_one_and_cpu_names_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_one_clear_error():
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_device("cuda:0")


def test_data_that_cannot_fit_the_device_is_refused_naming_the_settings():
    with pytest.raises(ValueError, match="--batch-size 100000000 with --history 1000000"):
        check_fits(TrainSettings(batch_size=100_000_000, history=1_000_000, device="cpu"), torch.device("cpu"))
    check_fits(TrainSettings(device="cpu"), torch.device("cpu"))  # the defaults fit


def test_a_run_records_its_software_and_peak_memory():
    assert set(versions()) == {"gatedrnn", "torch", "numpy", "python"}
    mb, kind = peak_memory_mb(torch.device("cpu"))
    assert mb > 10 and kind == "process peak RSS"
