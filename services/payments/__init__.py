"""Payments: the gateway port, the Stripe adapter and the sandbox checkout."""
