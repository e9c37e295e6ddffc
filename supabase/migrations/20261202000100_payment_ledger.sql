-- A payment is never recorded without being applied.
--
-- payment_events.applied_at: an event is received (row inserted, applied_at null) before its
-- effects run and marked applied only once they are done; a retry of an event that was
-- received but not applied runs its effects again (each is a conditional step). Rows written
-- as plain records (our own refunds, once-only notices) are applied when written.
--
-- checkout_sessions: every Checkout Session a booking ever had (a renewal replaces
-- bookings.checkout_session_id), so an event for an earlier session of the same booking is told
-- apart from one whose metadata names a booking the session never belonged to.
--
-- fulfilments: who is ticketing a paid booking (a lease, renewed while the provider call runs,
-- so a worker killed mid-ticketing is taken over once the lease runs out, and a live one never
-- is), and the provider's journal: the order an attempt placed (in doubt until ticketed) and
-- the provider's booking id once the ticket is issued, so a retry never buys twice.

alter table public.payment_events add column applied_at timestamptz default now();
update public.payment_events set applied_at = received_at;

create table public.checkout_sessions (
  session_id text primary key,
  booking_id uuid not null references public.bookings (id) on delete cascade,
  created_at timestamptz not null default now()
);

create index checkout_sessions_booking_idx on public.checkout_sessions (booking_id);

insert into public.checkout_sessions (session_id, booking_id)
  select checkout_session_id, id from public.bookings where checkout_session_id is not null;

create table public.fulfilments (
  booking_id uuid primary key references public.bookings (id) on delete cascade,
  lease_owner text,
  lease_until timestamptz,
  provider_order text,       -- what an attempt placed with the provider (in doubt until ticketed)
  provider_booking_id text,  -- the provider's booking once the ticket is issued
  updated_at timestamptz not null default now()
);

create trigger fulfilments_updated_at before update on public.fulfilments
  for each row execute function public.set_updated_at();

-- Take or renew the right to ticket one booking; returns the journal when this owner holds it.
create function public.claim_fulfilment(
  p_booking_id uuid, p_owner text, p_now timestamptz, p_until timestamptz
)
returns table (booking_id uuid, provider_order text, provider_booking_id text)
language sql
volatile
set search_path = ''
as $$
  insert into public.fulfilments as f (booking_id, lease_owner, lease_until)
  values (p_booking_id, p_owner, p_until)
  on conflict on constraint fulfilments_pkey do update
     set lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
   where f.lease_owner is null or f.lease_owner = p_owner or f.lease_until < p_now
  returning f.booking_id, f.provider_order, f.provider_booking_id;
$$;

-- Bookings already paid when this runs may be waiting for a person (manual ticketing): their
-- lease is kept for good, so reconciliation never tickets them a second time.
insert into public.fulfilments (booking_id, lease_owner, lease_until)
  select id, 'before-reconciliation', 'infinity' from public.bookings where status = 'paid';

alter table public.checkout_sessions enable row level security;
alter table public.fulfilments enable row level security;

revoke all on table public.checkout_sessions, public.fulfilments
  from public, anon, authenticated;
revoke all on function public.claim_fulfilment(uuid, text, timestamptz, timestamptz)
  from public, anon, authenticated;

grant select, insert, update, delete on table public.checkout_sessions, public.fulfilments
  to service_role;
grant execute on function public.claim_fulfilment(uuid, text, timestamptz, timestamptz)
  to service_role;
