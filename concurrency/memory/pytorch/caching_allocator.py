"""PyTorch's `DeviceCachingAllocator` (c10/cuda/CUDACachingAllocator.cpp), modelled as far as
it decides which bytes a tensor gets, with its default configuration (no `max_split_size`,
no expandable segments, no garbage-collection threshold, no memory fraction):

* a request is rounded up to a multiple of 512 B (`kMinBlockSize`); 0 B never reaches it;
* requests of at most 1 MiB use the small pool, larger ones the large pool;
* every free block belongs to the stream that allocated it, and only a request on that
  stream can take it: best fit, the smallest free block of the same pool and stream that is
  large enough, ties to the lowest address (the pool's order: stream, size, address);
* if none fits, a new segment is cudaMalloc'd for that stream: 2 MiB for a small request,
  20 MiB for a large one under 10 MiB, else the request rounded up to 2 MiB;
* a block larger than the request is split, the tensor taking its start, when the rest is
  ≥ 512 B (small pool) or > 1 MiB (large pool); otherwise the tensor gets the whole block;
* a freed block merges with the free neighbours of its own segment and goes back to its
  pool, unless streams were recorded on it (`record_stream`): then an event is recorded on
  each of those streams and the block stays out of the pool, unmerged, until they complete;
  each allocation first returns the blocks whose events have completed;
* segments are never given back (no `empty_cache`): the reserved bytes only grow.

LACE's address space: segments are laid one after another in the order they are
cudaMalloc'd, so a block's offset is its address in one arena and the arena's size is
PyTorch's reserved memory (`torch.cuda.memory_reserved()`). CUDA places segments wherever it
likes; any placement without overlap behaves the same, since blocks of different segments
never merge.

Events are opaque tokens of the caller's choosing (the policy uses node indices), and the
caller says which have completed when it allocates. Only the allocating stream's blocks are
examined then: the others could only be taken by an allocation on their own stream anyway,
which examines them itself (PyTorch examines every stream's events on each allocation; the
difference shows only in when other streams' blocks merge, never in which bytes a request
gets, as long as `done` only ever grows along each stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MIN_BLOCK_BYTES = 512  # kMinBlockSize: every size is rounded up to a multiple of it
SMALL_REQUEST_BYTES = 1 << 20  # kSmallSize: the largest request served by the small pool
SMALL_SEGMENT_BYTES = 2 << 20  # kSmallBuffer: segment size of the small pool
LARGE_SEGMENT_BYTES = 20 << 20  # kLargeBuffer: segment size for requests under 10 MiB
MIN_LARGE_ALLOC_BYTES = 10 << 20  # kMinLargeAlloc: from here a segment fits the request
ROUND_LARGE_BYTES = 2 << 20  # kRoundLarge: such segments are rounded up to 2 MiB


def round_size(nbytes: int) -> int:
    """The bytes a request of `nbytes` takes: a multiple of 512, at least 512."""
    if nbytes < MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    return (nbytes + MIN_BLOCK_BYTES - 1) // MIN_BLOCK_BYTES * MIN_BLOCK_BYTES


def segment_bytes(size: int) -> int:
    """The cudaMalloc size for a rounded request of `size` bytes that no cached block fits."""
    if size <= SMALL_REQUEST_BYTES:
        return SMALL_SEGMENT_BYTES
    if size < MIN_LARGE_ALLOC_BYTES:
        return LARGE_SEGMENT_BYTES
    return (size + ROUND_LARGE_BYTES - 1) // ROUND_LARGE_BYTES * ROUND_LARGE_BYTES


@dataclass(eq=False)
class Block:
    """A range of one segment: allocated, cached in its pool, or waiting for events."""

    offset: int
    size: int
    stream: int  # the stream that allocated it: only that stream's requests reuse it
    small: bool  # which pool (small: requests ≤ 1 MiB)
    prev: Block | None = None  # neighbours within the segment
    next: Block | None = None
    allocated: bool = False
    stream_uses: set[int] = field(default_factory=set)  # streams recorded while allocated
    events: tuple[int, ...] = ()  # freed but waiting: one event per recorded stream

    def splits_for(self, size: int) -> bool:
        """`should_split`: is the rest after `size` bytes worth keeping as a block?"""
        rest = self.size - size
        return rest >= MIN_BLOCK_BYTES if self.small else rest > SMALL_REQUEST_BYTES


def _never(_: int) -> bool:
    return False


class CachingAllocator:
    """One device's caching allocator (see the module docstring)."""

    def __init__(self) -> None:
        self.pools: dict[tuple[bool, int], list[Block]] = {}  # (small, stream) → free blocks
        self.waiting: dict[int, list[Block]] = {}  # stream → freed blocks awaiting events
        self.reserved_bytes = 0  # all segments: the arena
        self.segments = 0
        self.allocated_bytes = 0
        self.peak_allocated_bytes = 0

    def malloc(self, nbytes: int, stream: int, done: Callable[[int], bool] = _never) -> Block:
        """A block of at least `nbytes` (> 0) for `stream`; `done(event)` says which events
        have completed by now (blocks waiting only for those become reusable first)."""
        if nbytes <= 0:
            raise ValueError(f"PyTorch never asks its allocator for {nbytes} bytes")
        self._process_events(stream, done)
        size = round_size(nbytes)
        small = size <= SMALL_REQUEST_BYTES
        block = self._cached_block(size, stream, small) or self._new_segment(size, stream, small)
        if block.splits_for(size):
            rest = Block(block.offset + size, block.size - size, stream, small, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self.pools.setdefault((small, stream), []).append(rest)
        block.allocated = True
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block

    def record_stream(self, block: Block, stream: int) -> None:
        """`Tensor.record_stream`: the block is used on `stream` too (its own is ignored)."""
        if stream != block.stream:
            block.stream_uses.add(stream)

    def free(self, block: Block, event_on: Callable[[int], int]) -> None:
        """The last reference to `block` is gone. With recorded streams, `event_on(stream)`
        records an event on each and the block waits for them; otherwise it is cached now."""
        block.allocated = False
        self.allocated_bytes -= block.size
        if block.stream_uses:
            block.events = tuple(event_on(s) for s in sorted(block.stream_uses))
            block.stream_uses = set()
            self.waiting.setdefault(block.stream, []).append(block)
        else:
            self._cache(block)

    # ------------------------------------------------------------------ internals
    def _process_events(self, stream: int, done: Callable[[int], bool]) -> None:
        waiting = self.waiting.get(stream)
        if not waiting:
            return
        still = []
        for block in waiting:
            if all(done(e) for e in block.events):
                block.events = ()
                self._cache(block)
            else:
                still.append(block)
        self.waiting[stream] = still

    def _cached_block(self, size: int, stream: int, small: bool) -> Block | None:
        pool = self.pools.get((small, stream))
        if not pool:
            return None
        best: Block | None = None
        for b in pool:
            if b.size >= size and (best is None or (b.size, b.offset) < (best.size, best.offset)):
                best = b
        if best is not None:
            pool.remove(best)
        return best

    def _new_segment(self, size: int, stream: int, small: bool) -> Block:
        nbytes = segment_bytes(size)
        block = Block(self.reserved_bytes, nbytes, stream, small)
        self.reserved_bytes += nbytes
        self.segments += 1
        return block

    def _cache(self, block: Block) -> None:
        """`free_block`: merge with free neighbours of the segment, back into the pool."""
        pool = self.pools.setdefault((block.small, block.stream), [])
        prev, nxt = block.prev, block.next
        if prev is not None and not prev.allocated and not prev.events:
            pool.remove(prev)
            block.offset, block.size = prev.offset, block.size + prev.size
            block.prev = prev.prev
            if block.prev is not None:
                block.prev.next = block
        if nxt is not None and not nxt.allocated and not nxt.events:
            pool.remove(nxt)
            block.size += nxt.size
            block.next = nxt.next
            if block.next is not None:
                block.next.prev = block
        pool.append(block)
