"""Kraken's private formats read into the venue-neutral records (providers/kraken/_private.py):
the order info, trade rows and execution reports Kraken documents."""

from __future__ import annotations

import pytest

from providers.kraken._private import asset_name, balances, execution, order_view, trade_fill


def test_asset_codes_become_common_names():
    assert [asset_name(c) for c in ("XXBT", "ZUSD", "XETH", "XXDG", "DOT", "USDT", "ZEUR")] == \
        ["BTC", "USD", "ETH", "DOGE", "DOT", "USDT", "EUR"]
    got = balances({"ZUSD": {"balance": "100.5", "hold_trade": "40"},
                    "XXBT": {"balance": "0.2", "hold_trade": "0"},
                    "DOT.F": {"balance": "3", "hold_trade": "0"}}, {"XXBT": "BTC"})
    assert sorted(got) == ["BTC", "USD"]  # earn balances (".F") are not spot balances
    assert (got["USD"].free, got["USD"].locked, got["USD"].total) == (60.5, 40.0, 100.5)


def test_a_stop_limit_order_and_a_partly_filled_closed_one():
    stop = order_view("OQCLML-BW3P3-BUCMWZ", {
        "cl_ord_id": "e1-7", "status": "open", "vol": "0.5", "vol_exec": "0.1",
        "descr": {"pair": "XBTUSD", "type": "sell", "ordertype": "stop-loss-limit",
                  "price": "60000.0", "price2": "59900.0"}}, "btcusd")
    assert (stop.venue_id, stop.side, stop.order_type, stop.stop_price, stop.limit_price,
            stop.status, stop.filled) == ("e1-7", "sell", "stop_limit", 60_000.0, 59_900.0,
                                          "partially_filled", 0.1)
    ioc = order_view("OQCLML-BW3P3-BUCMWY", {
        "status": "closed", "vol": "1.0", "vol_exec": "0.4",
        "descr": {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "price": "1.0"}},
        "btcusd")
    assert (ioc.venue_id, ioc.status, ioc.done) == ("OQCLML-BW3P3-BUCMWY", "expired", True)


def test_execution_reports_merge_what_earlier_ones_said():
    known: dict = {}
    warnings: list[str] = []
    first = execution(known, {"order_id": "OA-1", "exec_type": "pending_new",
                              "order_status": "pending_new", "cl_ord_id": "e1-1",
                              "symbol": "BTC/USD", "side": "buy", "order_type": "limit",
                              "order_qty": 0.5, "limit_price": 100.0},
                      "btcusd", "BTC", "USD", 0.0, warnings.append)
    assert (first.venue_id, first.status, first.fill) == ("e1-1", "new", None)
    trade = execution(known, {"order_id": "OA-1", "exec_type": "trade", "trade_id": 77,
                              "exec_id": "TX-1", "last_qty": 0.5, "last_price": 99.5,
                              "liquidity_ind": "m", "cum_qty": 0.5,
                              "order_status": "partially_filled",
                              "fees": [{"asset": "BTC", "qty": 0.001}],
                              "timestamp": "2024-08-08T23:55:00.250000Z"},
                      "btcusd", "BTC", "USD", 0.0, warnings.append)
    fill = trade.fill
    assert fill is not None
    assert (fill.venue_id, fill.trade_id, fill.size, fill.liquidity, fill.time) == \
        ("e1-1", 77, 0.5, "maker", 1_723_161_300.25)
    assert fill.fee == pytest.approx(0.001 * 99.5)  # a fee in the base asset, in USD
    done = execution(known, {"order_id": "OA-1", "exec_type": "filled",
                             "order_status": "filled"}, "btcusd", "BTC", "USD", 0.0,
                     warnings.append)
    assert (done.venue_id, done.status, done.order.size, done.order.filled,
            done.order.limit_price) == ("e1-1", "filled", 0.5, 0.5, 100.0)
    odd = execution({}, {"order_id": "OB-2", "exec_type": "trade", "trade_id": 3,
                         "last_qty": 1, "last_price": 2, "fees": [{"asset": "KFEE", "qty": 5}]},
                    "btcusd", "BTC", "USD", 9.0, warnings.append)
    assert odd.fill is not None
    assert (odd.fill.fee, odd.fill.time) == (0.0, 9.0)
    assert warnings == ["kraken: a fee of 5 KFEE is not in BTC or USD; the ledger records it "
                        "as 0"]


def test_trade_rows_keep_kraken_trade_ids_or_hash_the_txid():
    row = {"ordertxid": "OA-1", "pair": "XXBTZUSD", "time": 1_723_161_300.5, "type": "sell",
           "price": "61000.0", "vol": "0.01", "fee": "0.61", "maker": True, "trade_id": 42}
    f = trade_fill("THVRQM-33VKH-UCI7BS", row, "btcusd", "e1-3")
    assert (f.trade_id, f.side, f.liquidity, f.fee, f.size) == (42, "sell", "maker", 0.61, 0.01)
    no_id = {k: v for k, v in row.items() if k != "trade_id"}
    a = trade_fill("THVRQM-33VKH-UCI7BS", no_id, "btcusd", "e1-3").trade_id
    b = trade_fill("THVRQM-33VKH-UCI7BT", no_id, "btcusd", "e1-3").trade_id
    assert a == trade_fill("THVRQM-33VKH-UCI7BS", no_id, "btcusd", "e1-3").trade_id
    assert a != b
