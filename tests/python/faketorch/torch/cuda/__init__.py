import os

from . import memory  # noqa: F401

_initialized = os.environ.get("FAKE_TORCH_CUDA_INITIALIZED") == "1"


def is_initialized():
    return _initialized


def current_device():
    return 0
