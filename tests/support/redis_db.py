"""Filled in by the state-store work: Redis fixtures."""
