"""Checks a CI or a reader runs on results: baselines (regression) and sanity checks (gradient masking)."""
