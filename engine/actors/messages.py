"""What crosses between actors, and how: plain msgpack-able values, validated on receipt.

tractor 0.1.0a5 encodes with msgspec's msgpack, so only builtins travel: quotes stay the
provider's dicts, orders and events travel as pydantic `model_dump()` dicts and are validated
back into `engine.orders` / `engine.quotes` models on the far side, and numpy arrays never travel
at all (a shared-memory token does). Nothing here does I/O.

Quote stream (feed daemon -> subscriber): each message is the msgpack encoding (bytes) of a list
of `[kind, payload]` items in the order the feed produced them: `[0, quote dict]`,
`[1, symbol whose bar closed]`, `[2, FeedStatusChanged dict]`; empty bytes are a heartbeat.
Order flow (strategy -> clearing actor): first `{"book": StrategyBook snapshot, "prefix":
client id prefix}` from the clearing actor, then command dicts one way and `{"events": [event
dicts]}` the other. Control (root <-> actor): the string "stop", counters dicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import TypeAdapter

from engine.orders import CancelOrder, LedgerEvent, ModifyOrder, SubmitOrder
from engine.quotes import FeedStatusChanged
from engine.scheduler import BAR, EVENT, QUOTE

__all__ = ["QUOTE", "BAR", "EVENT", "encode_items", "plain", "command_from", "events_from",
           "feed_event_from"]

_EVENTS: TypeAdapter = TypeAdapter(list[LedgerEvent])
_COMMANDS = {"submit_order": SubmitOrder, "cancel_order": CancelOrder,
             "modify_order": ModifyOrder}


def encode_items(items: list[tuple[int, Any]]) -> list[list[Any]]:
    """Turn mailbox items into wire items (models become dicts)."""
    out = []
    for kind, payload in items:
        if kind == EVENT and hasattr(payload, "model_dump"):
            payload = payload.model_dump()
        out.append([kind, payload])
    return out


def plain(value: Any) -> Any:
    """A copy of `value` with numpy scalars and arrays turned into builtins (msgpack-able)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def command_from(msg: dict) -> SubmitOrder | CancelOrder | ModifyOrder:
    """Validate an order command received from a strategy actor."""
    try:
        model = _COMMANDS[msg["type"]]
    except (KeyError, TypeError):
        raise ValueError(f"not an order command: {msg!r}") from None
    return model.model_validate(msg)


def events_from(dicts: list[dict]) -> list:
    """Validate broker events received from the clearing actor."""
    return _EVENTS.validate_python(dicts)


def feed_event_from(payload: Any) -> Any:
    return FeedStatusChanged.model_validate(payload) if isinstance(payload, dict) else payload
