"""Filled in by the storage work: PostgreSQL + PostgREST stack fixtures."""
