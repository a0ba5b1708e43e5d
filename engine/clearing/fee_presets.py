"""Published spot fee schedules of the venues the engine ships, as `Fees` a run can use.

Each preset is the venue's entry tier (no volume discount, no fee-token rebate); a trader with a
better tier passes their own `Fees` or `--commission`. Only data lives here.
"""

from __future__ import annotations

from engine.clearing.config import Fees

__all__ = ["FEE_PRESETS", "fee_preset"]

FEE_PRESETS: dict[str, Fees] = {
    # Binance spot, regular user (VIP 0): 0.1000% maker, 0.1000% taker
    # (binance.com/en/fee/schedule), before any BNB discount.
    "binance": Fees(maker_pct=0.001, taker_pct=0.001),
    # Kraken Pro spot, 30-day volume under $10,000: 0.25% maker, 0.40% taker
    # (kraken.com/features/fee-schedule).
    "kraken": Fees(maker_pct=0.0025, taker_pct=0.004),
    "none": Fees(),
}


def fee_preset(name: str) -> Fees:
    """The `Fees` of the preset called `name` (case-insensitive); ValueError names the known
    ones."""
    try:
        return FEE_PRESETS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown fee preset {name!r}: choose one of "
                         f"{', '.join(sorted(FEE_PRESETS))}") from None
