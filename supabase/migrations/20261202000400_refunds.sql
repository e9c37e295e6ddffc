-- Refunds bounded by what was paid, a cap on payment links per booking, and erasure that waits
-- for an upcoming trip to be over.
--
-- refunded_minor is money sent back; refund_pending_minor is money a worker has claimed and is
-- sending back right now. A claim is one conditional update (refunded + pending + x <= amount),
-- so two workers (an admin's refund and the traveller's cancellation) can never together send
-- back more than the charge. refund_attempts numbers the claims: each attempt gets its own
-- Stripe idempotency key, so a failed attempt is never replayed to the next one.
--
-- erase_after is set by /deletedata on a paid or confirmed booking whose trip is not over: the
-- airline still needs the travellers' names and documents, so they are erased by the sweep
-- (erase_held_bookings) once the trip is over or the booking no longer stands.

alter table public.bookings
  add column refunded_minor bigint not null default 0 check (refunded_minor >= 0),
  add column refund_pending_minor bigint not null default 0 check (refund_pending_minor >= 0),
  add column refund_attempts integer not null default 0 check (refund_attempts >= 0),
  add column checkout_renewals integer not null default 0 check (checkout_renewals >= 0),
  add column erase_after timestamptz,
  add constraint bookings_refunds_within_amount
    check (refunded_minor + refund_pending_minor <= amount_minor);

create index bookings_erase_after_idx on public.bookings (erase_after)
  where erase_after is not null;

-- Claim p_amount of what is left to refund; returns the attempt number, or no row when that
-- would send back more than was paid.
create function public.reserve_refund(p_booking_id uuid, p_amount bigint)
returns table (attempt integer)
language sql
volatile
set search_path = ''
as $$
  update public.bookings as b
     set refund_pending_minor = b.refund_pending_minor + p_amount,
         refund_attempts = b.refund_attempts + 1
   where b.id = p_booking_id
     and p_amount > 0
     and b.refunded_minor + b.refund_pending_minor + p_amount <= b.amount_minor
  returning b.refund_attempts;
$$;

-- A claimed refund ended: sent (it counts as refunded) or refused (the claim is released).
create function public.settle_refund(p_booking_id uuid, p_amount bigint, p_sent boolean)
returns table (id uuid)
language sql
volatile
set search_path = ''
as $$
  update public.bookings as b
     set refund_pending_minor = b.refund_pending_minor - p_amount,
         refunded_minor = b.refunded_minor + case when p_sent then p_amount else 0 end
   where b.id = p_booking_id
     and b.refund_pending_minor >= p_amount
  returning b.id;
$$;

-- One more payment link for a booking, unless it already had p_limit.
create function public.claim_checkout_renewal(p_booking_id uuid, p_limit integer)
returns table (renewals integer)
language sql
volatile
set search_path = ''
as $$
  update public.bookings as b
     set checkout_renewals = b.checkout_renewals + 1
   where b.id = p_booking_id
     and b.checkout_renewals < p_limit
  returning b.checkout_renewals;
$$;

-- As before, except that bookings held for an upcoming trip (erase_after set) keep their
-- travellers until erase_held_bookings erases them.
create or replace function public.delete_user_data(p_user_id bigint, p_erased jsonb)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  anonymised integer;
begin
  delete from public.profiles where id = p_user_id;

  update public.bookings as b
     set travellers = (
           select coalesce(jsonb_agg(t.traveller || p_erased order by t.position), '[]'::jsonb)
             from jsonb_array_elements(b.travellers) with ordinality as t(traveller, position)
         )
   where b.user_id = p_user_id
     and b.erase_after is null;
  get diagnostics anonymised = row_count;

  update public.flight_searches set user_id = null where user_id = p_user_id;
  return anonymised;
end;
$$;

-- Erase the travellers of held bookings whose trip is over (or that no longer stand).
create function public.erase_held_bookings(p_now timestamptz, p_erased jsonb)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  erased integer;
begin
  update public.bookings as b
     set travellers = (
           select coalesce(jsonb_agg(t.traveller || p_erased order by t.position), '[]'::jsonb)
             from jsonb_array_elements(b.travellers) with ordinality as t(traveller, position)
         ),
         erase_after = null
   where b.erase_after is not null
     and (b.erase_after <= p_now or b.status not in ('paid', 'confirmed'));
  get diagnostics erased = row_count;
  return erased;
end;
$$;

revoke all on function public.reserve_refund(uuid, bigint),
  public.settle_refund(uuid, bigint, boolean),
  public.claim_checkout_renewal(uuid, integer),
  public.erase_held_bookings(timestamptz, jsonb)
  from public, anon, authenticated;
grant execute on function public.reserve_refund(uuid, bigint),
  public.settle_refund(uuid, bigint, boolean),
  public.claim_checkout_renewal(uuid, integer),
  public.erase_held_bookings(timestamptz, jsonb)
  to service_role;
