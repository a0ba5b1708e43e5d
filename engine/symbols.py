"""Instrument lookup across providers: what `engine symbols PROVIDER [PATTERN]` prints.

It goes through the provider spec's optional `search_symbols` and `symbol_info` only, so it
works for any provider that has them (sim, csvfile, the live venues). It never streams.
"""

from __future__ import annotations

from typing import Any

from engine.provider import Provider, ProviderError, load_provider

__all__ = ["list_symbols", "SymbolLookupError"]


class SymbolLookupError(RuntimeError):
    """The provider could not list its symbols (no such function, or its source failed)."""


def list_symbols(provider: Provider | str, pattern: str = "", *,
                 options: dict[str, Any] | None = None, limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """Return the symbol info of the provider's symbols matching `pattern`, best first.

    `options` go to the provider's `configure()`; `limit` caps how many are returned. Raise
    ProviderError for an unknown provider or bad option, SymbolLookupError when the provider
    has no `search_symbols` or its source fails (a network error, say).
    """
    prov = load_provider(provider) if isinstance(provider, str) else provider
    prov.configure(**(options or {}))
    if getattr(prov.module, "search_symbols", None) is None:
        raise SymbolLookupError(f"provider {prov.name!r} cannot list symbols "
                                "(it has no search_symbols)")
    try:
        names = prov.search_symbols(pattern)
        if limit is not None:
            names = names[:limit]
        return [{"symbol": name, **prov.symbol_info(name)} for name in names]
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - a provider's own failure, reported in one line
        text = str(exc) or type(exc).__name__
        short = prov.name.rsplit(".", 1)[-1]
        # Venue errors already start with the venue's name; others get the provider's.
        raise SymbolLookupError(text if text.startswith(short) else
                                f"provider {prov.name!r}: {text}") from exc
