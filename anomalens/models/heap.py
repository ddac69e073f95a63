"""Handing memory that a long fit has freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the C heap's free pages to the operating system where the C library can (glibc's ``malloc_trim``).

    A fit allocates and frees many feature arrays of mixed sizes; glibc keeps the freed space that lies between
    pieces still in use mapped in the process, where it counts in the resident memory until handed back."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
