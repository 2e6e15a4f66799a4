"""`ggml_dyn_tallocr` for one chunk: best fit over sorted free blocks, carving from the start.

Ported from ggml-alloc.c (llama-cpp-python 0.3.36's vendored ggml), rule by rule:

* sizes are rounded up to the alignment;
* best fit over every free block *except the last*; ties go to the later block (`<=`);
* if none fits, the last block (which extends without limit: ggml-cuda's `max_size` is
  SIZE_MAX, so everything lives in chunk 0) takes the tensor;
* the tensor is carved from the block's start; an emptied block is removed;
* `max_size` (the arena's high-water mark) is `max(max_size, offset + size)`;
* a freed range merges with a free block that ends where it starts or starts where it ends
  (and then with that block's neighbour when they touch); otherwise it is inserted in order.

One extension, inert unless a policy uses it: every free block carries `clear`, a bitset of
the node indices that touched its bytes last. `alloc(..., ready=...)` only considers blocks
whose `clear` the caller accepts (the `happens_before` policy: every such node must happen
before the new writer). When the last block is not acceptable it is split at the high-water
mark, because the bytes above it were never used. With every `clear` empty (all other
policies) the behaviour is exactly ggml's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

UNBOUNDED = 1 << 62


def align_up(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


@dataclass
class FreeBlock:
    offset: int
    size: int
    clear: int = 0  # bitset of nodes whose accesses must precede the next writer


def _always(_: int) -> bool:
    return True


class DynAllocator:
    """One chunk of ggml's dynamic allocator (planning only: no memory is touched)."""

    def __init__(self, alignment: int) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.alignment = alignment
        self.blocks: list[FreeBlock] = [FreeBlock(0, UNBOUNDED)]
        self.max_size = 0

    def alloc(self, size: int, ready: Callable[[int], bool] = _always) -> int:
        """Offset for `size` bytes (rounded up to the alignment)."""
        size = align_up(size, self.alignment)
        best, best_size = -1, UNBOUNDED + 1
        for i, block in enumerate(self.blocks[:-1]):
            if size <= block.size <= best_size and ready(block.clear):
                best, best_size = i, block.size
        if best == -1:
            last = self.blocks[-1]
            if not ready(last.clear):
                high = max(self.max_size, last.offset)
                if high > last.offset:
                    last.size = high - last.offset
                    self.blocks.append(FreeBlock(high, UNBOUNDED - high))
                else:
                    last.clear = 0  # nothing below the high-water mark: never used bytes
            best = len(self.blocks) - 1
        block = self.blocks[best]
        offset = block.offset
        block.offset += size
        block.size -= size
        if block.size == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int, clear: int = 0) -> None:
        """Return `size` bytes at `offset` to the pool, merging with touching neighbours."""
        size = align_up(size, self.alignment)
        blocks = self.blocks
        for i, block in enumerate(blocks):
            if block.offset + block.size == offset:
                block.size += size
                block.clear |= clear
                if i + 1 < len(blocks) and block.offset + block.size == blocks[i + 1].offset:
                    block.size += blocks[i + 1].size
                    block.clear |= blocks[i + 1].clear
                    del blocks[i + 1]
                return
            if offset + size == block.offset:
                block.offset = offset
                block.size += size
                block.clear |= clear
                if i > 0 and blocks[i - 1].offset + blocks[i - 1].size == block.offset:
                    blocks[i - 1].size += block.size
                    blocks[i - 1].clear |= block.clear
                    del blocks[i]
                return
        pos = 0
        while pos < len(blocks) and blocks[pos].offset < offset:
            pos += 1
        blocks.insert(pos, FreeBlock(offset, size, clear))
