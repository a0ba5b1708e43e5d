"""Small jitted helpers the kernels share: fused multiply-add, prefetch, leading-NaN skip.

`fma` and `prefetch` are intrinsics (single instructions). The jitted helpers take arrays, and a
call passing arrays pays for reference counting, so kernels call them outside their loops only.
Numba's cache keys a compiled kernel on the kernel's own source file: after editing this module
delete `engine/kernels/__pycache__` so that the kernels calling it recompile.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

# How many values ahead a loop prefetches its inputs. One field of a record array in shared
# memory is one value per 72-byte row: without prefetching, a loop with a long dependency chain
# keeps too few cache misses in flight to use the memory bandwidth (RSI over a strided 10M-bar
# field: 8.1 ns a bar without, 4.9 with 64 ahead; contiguous input gains too, 2.3 -> 1.4).
PREFETCH_AHEAD = 64

# Header slots every kernel state starts with: the period (or other size) and the number of
# values consumed since the first one that was a number.
PERIOD, COUNT = 0, 1


@intrinsic
def fma(typingctx, a, b, c):
    """a*b + c with one rounding (llvm.fma: one instruction on any x86-64-v3 or aarch64 CPU).

    Spelled out instead of left to fastmath contraction so that which product is fused, and
    therefore what sits on a loop-carried chain, does not depend on the compiler's choice.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the cache to fetch arr[idx] for reading; never faults, even past the array's end."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer2(
            context,
            builder,
            data=ary.data,
            shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides),
            layout=aryty.layout,
            inds=[args[1]],
            wraparound=False,
            boundscheck=False,
        )
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # Read, into L2 (locality 2, prefetcht1): into L1 as well, the prefetches compete for
        # its fill buffers with the stores of kernels writing several outputs (MACD over a
        # strided 10M-bar field: 14.4 ns a bar into L1, 6.1 into L2).
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, error_model="numpy")
def first_number(x, start):
    """Index of the first non-NaN value of x at or after `start` (len(x) if none)."""
    i = start
    m = x.shape[0]
    while i < m and np.isnan(x[i]):
        i += 1
    return i


@njit(cache=True, nogil=True, error_model="numpy")
def save_tail(x, ring, c0, base, g, n):
    """Store the values of global positions max(c0, g-n)..g-1 into `ring`."""
    for h in range(max(c0, g - n), g):
        ring[h % n] = x[h + base]
