"""The end of a run with `close_at_end`: the positions still open are closed at each symbol's
last close, as market orders filled there with commission and without slippage.

The fills go through the account's own replay path (`Account.apply`), so cash, fees and
positions are the clearing core's arithmetic. The strategy is not called: its run is over.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.clearing.broker import PaperBroker
from engine.orders import OrderAccepted, OrderFilled, SubmitOrder

__all__ = ["close_positions"]


def close_positions(broker: PaperBroker, closes: Mapping[str, tuple[float, float]]
                    ) -> list[OrderFilled]:
    """Close every open position of `broker`'s account at `closes[symbol]` = (time in epoch s,
    price); return the fills, in symbol order. Each is a taker fill of an order (client id
    `close_at_end:<symbol>`) that the broker's order list records."""
    account = broker.account
    fees = account.config.fees
    out = []
    for symbol, (time, price) in closes.items():
        qty = account.position(symbol)
        if qty == 0.0:
            continue
        side = "sell" if qty > 0 else "buy"
        size = abs(qty)
        order = SubmitOrder(client_id=f"close_at_end:{symbol}", symbol=symbol, side=side,
                            size=size, time=time)
        account.apply(OrderAccepted(time=time, account=account.name, order=order))
        fee = fees.per_unit * size + fees.taker_pct * price * size + fees.fixed
        fill = OrderFilled(time=time, account=account.name, fill_id=account.fills + 1,
                           client_id=order.client_id, symbol=symbol, side=side, price=price,
                           size=size, fee=fee, liquidity="taker", remaining=0.0)
        account.apply(fill)
        broker.orders.append(order)
        out.append(fill)
    return out
