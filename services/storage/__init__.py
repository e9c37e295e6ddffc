"""Durable storage: one port, a Supabase adapter for production and a SQLite one for local runs."""

from services.storage.base import BookingNotFoundError, Storage, StorageUnavailableError

__all__ = ["BookingNotFoundError", "Storage", "StorageUnavailableError"]
