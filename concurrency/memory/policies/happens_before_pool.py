"""The free list of the `happens_before` policy: ggml's dynamic allocator whose free bytes
remember which nodes touched them last.

A free block is kept as a run of touching *pieces*; each piece carries `clear`, a bitset of
the node indices whose accesses must precede the next writer of those bytes (the old tensor's
writer and readers). `alloc(size, blocked)` only uses *ready* pieces, whose `clear` shares no
node with `blocked` (the caller's nodes that do not happen before the new writer): ready
pieces that touch count as one run;
best fit (ties to the later run, as ggml's `<=`) runs over the ready runs inside the blocks
other than the last, and otherwise the lowest ready run of the last block that fits (its
never-used tail always does) takes the tensor, carved from the run's start. A freed range
merges only with pieces of the same `clear`. `settle` forgets bits of nodes that already
happen before every later node and merges pieces that become equal, keeping the list short.

With every `clear` empty this is ggml's rule on ggml's blocks except that touching blocks
count as one (ggml can leave them apart with a zero-size block between).
"""

from __future__ import annotations

from dataclasses import dataclass

from concurrency.memory.ggml.tallocr import UNBOUNDED, DynAllocator, FreeBlock, align_up


@dataclass
class FreePiece(FreeBlock):
    """Free bytes and the nodes whose accesses must precede their next writer."""

    clear: int = 0


class HappensBeforeAllocator(DynAllocator):
    """`DynAllocator` whose free pieces carry `clear` bitsets (see the module docstring)."""

    def __init__(self, alignment: int) -> None:
        super().__init__(alignment)
        self.free_blocks: list[FreePiece] = [FreePiece(0, UNBOUNDED)]

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """Maximal runs of touching pieces, as (offset, size)."""
        out: list[tuple[int, int]] = []
        for p in self.free_blocks:
            if out and out[-1][0] + out[-1][1] == p.offset:
                out[-1] = (out[-1][0], out[-1][1] + p.size)
            else:
                out.append((p.offset, p.size))
        return out

    def _runs(self, blocked: int) -> list[tuple[int, int, bool]]:
        """Ready runs (offset, size, in_last_block) in address order."""
        pieces = self.free_blocks
        runs: list[tuple[int, int, bool]] = []
        last_start = len(pieces) - 1
        while last_start > 0 and pieces[last_start - 1].end == pieces[last_start].offset:
            last_start -= 1
        prev_end = -1
        for i, p in enumerate(pieces):
            if p.clear & blocked:
                prev_end = -1
                continue
            in_last = i >= last_start
            if runs and prev_end == p.offset and runs[-1][2] == in_last:
                off, size, _ = runs[-1]
                runs[-1] = (off, size + p.size, in_last)
            else:
                runs.append((p.offset, p.size, in_last))
            prev_end = p.offset + p.size
        return runs

    def alloc(self, size: int, blocked: int = 0) -> int:
        """Offset for `size` bytes (rounded up) in pieces whose `clear` avoids `blocked`."""
        size = align_up(size, self.alignment)
        runs = self._runs(blocked)
        best, best_size = -1, UNBOUNDED + 1
        for offset, run_size, in_last in runs:
            if not in_last and size <= run_size <= best_size:
                best, best_size = offset, run_size
        if best == -1:
            best = next(off for off, run_size, in_last in runs if in_last and run_size >= size)
        self._take(best, size)
        self.max_size = max(self.max_size, best + size)
        return best

    def _take(self, offset: int, size: int) -> None:
        """Remove [offset, offset + size) from the free pieces (it lies inside ready ones)."""
        end = offset + size
        kept: list[FreePiece] = []
        for p in self.free_blocks:
            if p.end <= offset or p.offset >= end or p.size == 0:  # ggml leaves empty blocks be
                kept.append(p)
                continue
            if p.offset < offset:
                kept.append(FreePiece(p.offset, offset - p.offset, p.clear))
            if p.end > end:
                kept.append(FreePiece(end, p.end - end, p.clear))
        self.free_blocks = kept

    def settle(self, settled: int) -> None:
        """Forget clear bits of nodes that already happen before every later node, and merge
        pieces that become equal."""
        merged: list[FreePiece] = []
        for p in self.free_blocks:
            if p.clear and p.clear & ~settled == 0:
                p.clear = 0
            if merged and merged[-1].end == p.offset and merged[-1].clear == p.clear:
                merged[-1].size += p.size
            else:
                merged.append(p)
        self.free_blocks = merged

    def free(self, offset: int, size: int, clear: int = 0) -> None:
        """ggml's `ggml_dyn_tallocr_free_bytes` over pieces of the same `clear`: merge with
        the first such piece (in address order) that ends where the range starts or starts
        where it ends, then with that piece's neighbour; otherwise insert in order."""
        size = align_up(size, self.alignment)
        pieces = self.free_blocks
        for i, p in enumerate(pieces):
            if p.clear != clear:
                continue
            if p.end == offset:
                p.size += size
                if (
                    i + 1 < len(pieces)
                    and p.end == pieces[i + 1].offset
                    and pieces[i + 1].clear == clear
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
