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

One extension, inert unless a policy uses it: free bytes carry `clear`, a bitset of the node
indices that touched them last, kept per *piece* (a free block is a run of touching pieces; ggml
never leaves two free blocks touching, so with every `clear` empty each block is one piece and
everything below is exactly ggml's). `alloc(..., ready=...)` only uses pieces whose `clear`
the caller accepts (the `happens_before` policy: every such node must happen before the new
writer): best fit runs over the ready runs of pieces inside the blocks other than the last,
and otherwise the lowest ready run of the last block that fits (its never-used tail always
does), carving from the run's start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

UNBOUNDED = 1 << 62


def align_up(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


@dataclass
class FreePiece:
    offset: int
    size: int
    clear: int = 0  # bitset of nodes whose accesses must precede the next writer

    @property
    def end(self) -> int:
        return self.offset + self.size


def _always(_: int) -> bool:
    return True


class DynAllocator:
    """One chunk of ggml's dynamic allocator (planning only: no memory is touched)."""

    def __init__(self, alignment: int, coalesce: bool = False) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.alignment = alignment
        # Only the happens_before rule needs ready pieces that touch to count as one run;
        # ggml itself can leave touching blocks apart (a zero-size block between them).
        self.coalesce = coalesce
        self.pieces: list[FreePiece] = [FreePiece(0, UNBOUNDED)]
        self.max_size = 0

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """ggml's free blocks: maximal runs of touching pieces, as (offset, size)."""
        out: list[tuple[int, int]] = []
        for p in self.pieces:
            if out and out[-1][0] + out[-1][1] == p.offset:
                out[-1] = (out[-1][0], out[-1][1] + p.size)
            else:
                out.append((p.offset, p.size))
        return out

    def _runs(self, ready: Callable[[int], bool]) -> list[tuple[int, int, bool]]:
        """Ready runs (offset, size, in_last_block) in address order."""
        runs: list[tuple[int, int, bool]] = []
        last_start = len(self.pieces) - 1
        while last_start > 0 and self.pieces[last_start - 1].end == self.pieces[last_start].offset:
            last_start -= 1
        prev_end = -1
        for i, p in enumerate(self.pieces):
            if not ready(p.clear):
                prev_end = -1
                continue
            in_last = i >= last_start
            if self.coalesce and runs and prev_end == p.offset and runs[-1][2] == in_last:
                off, size, _ = runs[-1]
                runs[-1] = (off, size + p.size, in_last)
            else:
                runs.append((p.offset, p.size, in_last))
            prev_end = p.end
        return runs

    def alloc(self, size: int, ready: Callable[[int], bool] = _always) -> int:
        """Offset for `size` bytes (rounded up to the alignment)."""
        size = align_up(size, self.alignment)
        if ready is _always and not self.coalesce:
            return self._alloc_plain(size)
        runs = self._runs(ready)
        best, best_size = -1, UNBOUNDED + 1
        for offset, run_size, in_last in runs:
            if not in_last and size <= run_size <= best_size:
                best, best_size = offset, run_size
        if best == -1:
            best = next(off for off, run_size, in_last in runs if in_last and run_size >= size)
        self._take(best, size)
        self.max_size = max(self.max_size, best + size)
        return best

    def _alloc_plain(self, size: int) -> int:
        """ggml's own loop, for the common case where every piece is usable (one piece per
        block): best fit over all but the last, else the last; carve from the start."""
        pieces = self.pieces
        best, best_size = -1, UNBOUNDED + 1
        for i in range(len(pieces) - 1):
            if size <= pieces[i].size <= best_size:
                best, best_size = i, pieces[i].size
        if best == -1:
            best = len(pieces) - 1
        piece = pieces[best]
        offset = piece.offset
        piece.offset += size
        piece.size -= size
        if piece.size == 0:
            del pieces[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def _take(self, offset: int, size: int) -> None:
        """Remove [offset, offset + size) from the free pieces (it lies inside ready ones)."""
        end = offset + size
        kept: list[FreePiece] = []
        for p in self.pieces:
            if p.end <= offset or p.offset >= end or p.size == 0:  # ggml leaves empty blocks be
                kept.append(p)
                continue
            if p.offset < offset:
                kept.append(FreePiece(p.offset, offset - p.offset, p.clear))
            if p.end > end:
                kept.append(FreePiece(end, p.end - end, p.clear))
        self.pieces = kept

    def settle(self, settled: int) -> None:
        """Forget clear bits of nodes that already happen before every later node, and merge
        pieces that become equal (keeps the piece list short; no effect without clears)."""
        merged: list[FreePiece] = []
        for p in self.pieces:
            if p.clear and p.clear & ~settled == 0:
                p.clear = 0
            if merged and merged[-1].end == p.offset and merged[-1].clear == p.clear:
                merged[-1].size += p.size
            else:
                merged.append(p)
        self.pieces = merged

    def free(self, offset: int, size: int, clear: int = 0) -> None:
        """Return `size` bytes at `offset` to the pool: ggml's `ggml_dyn_tallocr_free_bytes`,
        which merges with the first block (in address order) that ends where the range starts
        or starts where it ends, then with that block's neighbour; pieces of another `clear`
        are never merged."""
        size = align_up(size, self.alignment)
        pieces = self.pieces
        for i, p in enumerate(pieces):
            if p.clear != clear:
                continue
            if p.end == offset:
                p.size += size
                if (
                    i + 1 < len(pieces)
                    and p.end == pieces[i + 1].offset
                    and (pieces[i + 1].clear == clear)
                ):
                    p.size += pieces[i + 1].size
                    del pieces[i + 1]
                return
            if offset + size == p.offset:
                p.offset = offset
                p.size += size
                if i > 0 and pieces[i - 1].end == p.offset and pieces[i - 1].clear == clear:
                    pieces[i - 1].size += p.size
                    del pieces[i]
                return
        pos = 0
        while pos < len(pieces) and pieces[pos].offset < offset:
            pos += 1
        pieces.insert(pos, FreePiece(offset, size, clear))
