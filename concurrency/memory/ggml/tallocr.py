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

Nothing else: policies that need another rule subclass `DynAllocator` in their own module
(`happens_before` does, in `concurrency.memory.policies.happens_before_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass

UNBOUNDED = 1 << 62


def align_up(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


@dataclass
class FreeBlock:
    """One of ggml's free blocks: `size` free bytes from `offset`."""

    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


class DynAllocator:
    """One chunk of ggml's dynamic allocator (planning only: no memory is touched)."""

    def __init__(self, alignment: int) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.alignment = alignment
        self.free_blocks: list[FreeBlock] = [FreeBlock(0, UNBOUNDED)]
        self.max_size = 0

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """The free blocks in address order, as (offset, size)."""
        return [(b.offset, b.size) for b in self.free_blocks]

    def alloc(self, size: int) -> int:
        """Offset for `size` bytes (rounded up to the alignment): best fit over all blocks but
        the last, else the last; carved from the block's start."""
        size = align_up(size, self.alignment)
        blocks = self.free_blocks
        best, best_size = -1, UNBOUNDED + 1
        for i in range(len(blocks) - 1):
            if size <= blocks[i].size <= best_size:
                best, best_size = i, blocks[i].size
        if best == -1:
            best = len(blocks) - 1
        block = blocks[best]
        offset = block.offset
        block.offset += size
        block.size -= size
        if block.size == 0:
            del blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        """Return `size` bytes at `offset` to the pool: ggml's `ggml_dyn_tallocr_free_bytes`,
        which merges with the first block (in address order) that ends where the range starts
        or starts where it ends, then with that block's neighbour."""
        size = align_up(size, self.alignment)
        blocks = self.free_blocks
        for i, b in enumerate(blocks):
            if b.end == offset:
                b.size += size
                if i + 1 < len(blocks) and b.end == blocks[i + 1].offset:
                    b.size += blocks[i + 1].size
                    del blocks[i + 1]
                return
            if offset + size == b.offset:
                b.offset = offset
                b.size += size
                if i > 0 and blocks[i - 1].end == b.offset:
                    blocks[i - 1].size += b.size
                    del blocks[i]
                return
        pos = 0
        while pos < len(blocks) and blocks[pos].offset < offset:
            pos += 1
        blocks.insert(pos, FreeBlock(offset, size))
