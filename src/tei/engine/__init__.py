"""Requests → tokens → token-budget batches → model → per-caller results. Knows nothing about HTTP."""
