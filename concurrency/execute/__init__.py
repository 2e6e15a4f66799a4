"""Stage 4: running graphs for real — the NumPy reference and arena executor (CPU).

`numpy_ops` (float64/float32 reference ops), `numpy_arena` (runs a plan inside one byte
buffer in an order the schedule allows, so an unsafe plan gives wrong numbers on the CPU).
"""
