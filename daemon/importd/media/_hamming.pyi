# Types of the C extension built from _hamming.c (the near-duplicate index's search loops).
import numpy as np
import numpy.typing as npt

def collect(arena: npt.NDArray[np.uint64], query: int, hits: npt.NDArray[np.uint64], /) -> int: ...
def collect_pairs(
    arena: npt.NDArray[np.uint64], hits: npt.NDArray[np.uint64], owners: npt.NDArray[np.uint64], /
) -> int: ...
