-- Trip reminders: "check-in opens" and "departure day" for paid and confirmed bookings, for
-- the outbound flight and, on a round trip, for the flight home.
--
-- profiles.reminders: the traveller's switch (/reminders on|off, and the button on a reminder).
--
-- bookings.departs_at: the outbound flight's departure as an instant, written by the bot with
-- every new booking (services/storage/rows.py, booking_row) and filled here for the bookings
-- there already are. The every-minute job reads only bookings leaving in the next two days,
-- through its index, never the whole table.
--
-- bookings.returns_at: likewise the flight home's departure (the first inbound segment; null
-- for a one-way trip), for the return_ kinds, through its own index.
--
-- booking_reminders: one row per (booking, kind), inserted before the reminder is sent
-- (INSERT ... ON CONFLICT DO NOTHING: of any number of workers exactly one gets the row, and
-- only that one sends), then marked with how it ended. A worker that dies between the claim
-- and the send leaves the row in 'sending': that reminder is lost rather than ever sent twice.

alter table public.profiles add column reminders boolean not null default true;

alter table public.bookings add column departs_at timestamptz;

update public.bookings as b
   set departs_at = (
     select (s.segment ->> 'departure')::timestamptz
       from jsonb_array_elements(b.itinerary -> 'segments') with ordinality as s (segment, n)
      where not coalesce((s.segment ->> 'inbound')::boolean, false)
      order by s.n
      limit 1
   );

create index bookings_departs_at_idx on public.bookings (departs_at);

alter table public.bookings add column returns_at timestamptz;

update public.bookings as b
   set returns_at = (
     select (s.segment ->> 'departure')::timestamptz
       from jsonb_array_elements(b.itinerary -> 'segments') with ordinality as s (segment, n)
      where coalesce((s.segment ->> 'inbound')::boolean, false)
      order by s.n
      limit 1
   );

create index bookings_returns_at_idx on public.bookings (returns_at);

create table public.booking_reminders (
  booking_id uuid not null references public.bookings (id) on delete cascade,
  kind text not null
    check (kind in ('checkin', 'departure', 'return_checkin', 'return_departure')),
  status text not null default 'sending'
    check (status in ('sending', 'sent', 'skipped', 'bot_blocked', 'failed')),
  claimed_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (booking_id, kind)
);

-- The bookings that may be due a reminder of one kind: booked, the reminded flight (outbound,
-- or the flight home for the return_ kinds) leaving in (after, until], the owner's reminders
-- on and nobody blocked, and none of that kind claimed yet. Two queries rather than one on
-- coalesce/case, so each is a range on its own index.
create function public.reminder_candidates(
  p_kind text, p_after timestamptz, p_until timestamptz, p_limit integer, p_offset integer
)
returns setof public.bookings
language plpgsql
stable
set search_path = ''
as $$
begin
  if p_kind in ('return_checkin', 'return_departure') then
    return query
      select b.*
        from public.bookings as b
        join public.profiles as p on p.id = b.user_id
       where b.returns_at > p_after and b.returns_at <= p_until
         and b.status in ('paid', 'confirmed')
         and p.reminders and not p.blocked and not p.bot_blocked
         and not exists (select 1 from public.booking_reminders as r
                          where r.booking_id = b.id and r.kind = p_kind)
       order by b.returns_at, b.id
       limit greatest(p_limit, 0) offset greatest(p_offset, 0);
  else
    return query
      select b.*
        from public.bookings as b
        join public.profiles as p on p.id = b.user_id
       where b.departs_at > p_after and b.departs_at <= p_until
         and b.status in ('paid', 'confirmed')
         and p.reminders and not p.blocked and not p.bot_blocked
         and not exists (select 1 from public.booking_reminders as r
                          where r.booking_id = b.id and r.kind = p_kind)
       order by b.departs_at, b.id
       limit greatest(p_limit, 0) offset greatest(p_offset, 0);
  end if;
end;
$$;

alter table public.booking_reminders enable row level security;

revoke all on table public.booking_reminders from public, anon, authenticated;
revoke all on function public.reminder_candidates(text, timestamptz, timestamptz, integer, integer)
  from public, anon, authenticated;

grant select, insert, update, delete on table public.booking_reminders to service_role;
grant execute on function public.reminder_candidates(text, timestamptz, timestamptz, integer, integer)
  to service_role;
