-- Refund claims nobody settled: the worker sending the refund stopped, or Stripe never said
-- whether it made it. The every-minute reconciliation finds them by this index and ends each
-- with what Stripe says went back (services/bookings.py, BookingService.resolve_refund_claims).
create index bookings_refund_claims_idx on public.bookings (updated_at)
  where refund_pending_minor > 0;
