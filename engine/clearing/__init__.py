"""The clearing engine: paper trading's matching, accounting and durable per-account ledger."""
