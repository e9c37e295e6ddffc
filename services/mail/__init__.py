"""Email to travellers: the sender port with its SMTP and file adapters, the confirmation and
refund messages with their calendar file, and the receipts hook the booking service calls."""
