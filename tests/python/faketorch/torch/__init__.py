"""A stand-in for PyTorch, for tests/python/test_torch.py: just what
ckalloc.torch touches. FAKE_TORCH_CUDA_INITIALIZED=1 makes
torch.cuda.is_initialized() true."""
from . import cuda  # noqa: F401

IS_FAKE = True
__version__ = "0.0.0+fake"
