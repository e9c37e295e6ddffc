-- The funnel's "paid" counts bookings whose money was taken, whatever came after (confirmed,
-- ticketing failed, refunded, or cancelled after paying). A booking given up before paying is
-- cancelled too, but has no payment intent: it is not paid. The same rule as SQLite's funnel
-- (services/models.py, PAYMENT_TAKEN_STATUSES). Replacing keeps the function's grants.
create or replace function public.search_funnel(p_since timestamptz)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'search', count(*),
    'chosen', count(*) filter (where chosen_at is not null),
    'reviewed', count(*) filter (where reviewed_at is not null),
    'paid', (select count(*)
               from public.bookings
              where created_at >= p_since
                and (status in ('paid', 'confirmed', 'failed', 'refunded')
                     or (status = 'cancelled' and payment_intent_id is not null)))
  )
  from public.flight_searches
  where created_at >= p_since;
$$;
