"""CUDAPluggableAllocator as PyTorch has it: dlopen the path, look up the two
functions, call malloc(size, device, stream) / free(ptr, size, device, stream)."""
import ctypes

_current = None


class CUDAPluggableAllocator:
    def __init__(self, path_to_so_file, alloc_fn_name, free_fn_name):
        self.path = path_to_so_file
        self.alloc_fn_name = alloc_fn_name
        self.free_fn_name = free_fn_name
        lib = ctypes.CDLL(path_to_so_file)
        self._malloc = getattr(lib, alloc_fn_name)
        self._malloc.restype = ctypes.c_void_p
        self._malloc.argtypes = [ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
        self._free = getattr(lib, free_fn_name)
        self._free.restype = None
        self._free.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]

    def malloc(self, size, device, stream):
        return self._malloc(size, device, stream)

    def free(self, ptr, size, device, stream):
        self._free(ptr, size, device, stream)


def change_current_allocator(allocator):
    global _current
    _current = allocator


def current_allocator():
    return _current
