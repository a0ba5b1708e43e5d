"""An order sized as a fraction of equity on a live venue (the loopback Binance of
tests/providers/fake_trading.py): a venue takes only sizes, so the broker resolves it when
placing it, from the account's equity, the latest ask and the venue's taker fee, in the venue's
lots; the ledger keeps the fraction and the size sent."""

from __future__ import annotations

import math

from engine.clearing.ledger import read_events
from engine.orders import OrderAccepted, OrderRejected, SubmitOrder
from tests.clearing.test_live_binance import live, placed

LOT = 0.00001  # BTCUSDT's step on the fake venue (as on Binance)


async def test_a_fraction_is_resolved_when_placed_in_the_venue_s_lots(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        equity, ask = broker.account.equity(), venue.books["BTCUSDT"].ask
        broker.submit(SubmitOrder(client_id="f", symbol="btcusdt", side="buy",
                                  equity_fraction=0.5))
        await broker.wait_until(lambda: broker.fills)
        await broker.drain()
        lots = math.floor(0.5 * equity / (ask * 1.001) / LOT)
        assert len(placed(venue)) == 1
        sent = venue.orders[max(venue.orders)]
        assert sent.qty == lots * LOT
        assert (lots + 1) * LOT * ask * 1.001 > 0.5 * equity >= lots * LOT * ask * 1.001
        assert sum(f.size for f in broker.fills) == sent.qty
        # Too small a fraction for one lot: refused, nothing sent.
        broker.submit(SubmitOrder(client_id="g", symbol="btcusdt", side="buy",
                                  equity_fraction=1e-9))
        (refused,) = [e for e in events if isinstance(e, OrderRejected)]
        assert refused.reason.startswith("sized as a fraction of equity")
        assert "less than one lot of 1e-05 btcusdt" in refused.reason
        assert len(placed(venue)) == 1
    accepted = [e.order for _, e in read_events(tmp_path / "live1")
                if isinstance(e, OrderAccepted)]
    assert (accepted[0].equity_fraction, accepted[0].size) == (0.5, lots * LOT)
