"""Record dtypes shared by providers, the sampler and the kernels.

Only numpy dtypes and the integer codes of tick types live here: no I/O, no validation logic.
"""

import numpy as np

# The OHLCV row of SPEC.md. Providers may append fields; nothing may reorder these.
_ohlc_fields = [
    ("index", np.int64),  # row number in the buffer
    ("time", np.int64),  # bar open time, epoch seconds
    ("open", np.float64),
    ("high", np.float64),
    ("low", np.float64),
    ("close", np.float64),
    ("volume", np.float64),
    ("count", np.int64),  # trades in the bar
    ("bar_wap", np.float64),  # volume-weighted average price of the bar's trades
]
ohlc_dtype = np.dtype(_ohlc_fields)

OHLC_FIELDS: tuple[str, ...] = tuple(name for name, _ in _ohlc_fields)

# Integer codes of the tick types of SPEC.md, as stored in `tick_dtype["type"]`.
TICK_TYPES: dict[str, int] = {
    "trade": 0,
    "bid": 1,
    "ask": 2,
    "bsize": 3,
    "asize": 4,
    "utrade": 5,
    "dark_trade": 6,
}
TICK_NAMES: dict[int, str] = {code: name for name, code in TICK_TYPES.items()}
TRADE, BID, ASK, BSIZE, ASIZE, UTRADE, DARK_TRADE = range(7)

# One row per tick the feed receives; `sym` is the symbol's position in the feed's symbol list.
tick_dtype = np.dtype(
    [
        ("index", np.int64),
        ("time", np.float64),  # epoch seconds of the source event
        ("price", np.float64),
        ("size", np.float64),
        ("sym", np.int32),
        ("type", np.int32),  # a TICK_TYPES code
    ]
)
