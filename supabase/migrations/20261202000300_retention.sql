-- Retention: the rows that only grow are deleted once old (services/retention.py runs this).
--
-- Refused admin attempts (admin_audit rows with action 'denied'; admin actions themselves are
-- kept), payment events of no live booking (the statuses in p_live_statuses, where money may
-- still arrive or be refunded, keep theirs however old), and the search log. Oldest first and
-- at most p_limit rows per table per call, so one call never holds a table for long.
create function public.delete_expired_records(
  p_denied_audit_before timestamptz,
  p_payment_events_before timestamptz,
  p_searches_before timestamptz,
  p_live_statuses text[],
  p_limit integer
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_audit integer;
  v_events integer;
  v_searches integer;
begin
  delete from public.admin_audit
   where id in (select a.id
                  from public.admin_audit as a
                 where a.action = 'denied' and a.created_at < p_denied_audit_before
                 order by a.created_at
                 limit p_limit);
  get diagnostics v_audit = row_count;

  delete from public.payment_events
   where event_id in (select e.event_id
                        from public.payment_events as e
                       where e.received_at < p_payment_events_before
                         and not exists (select 1
                                           from public.bookings as b
                                          where b.id = e.booking_id
                                            and b.status = any (p_live_statuses))
                       order by e.received_at
                       limit p_limit);
  get diagnostics v_events = row_count;

  delete from public.flight_searches
   where id in (select s.id
                  from public.flight_searches as s
                 where s.created_at < p_searches_before
                 order by s.created_at
                 limit p_limit);
  get diagnostics v_searches = row_count;

  return jsonb_build_object(
    'admin_audit', v_audit, 'payment_events', v_events, 'flight_searches', v_searches
  );
end;
$$;

-- Oldest-first scans of refused attempts and of the ledger by age.
create index admin_audit_denied_created_idx on public.admin_audit (created_at)
  where action = 'denied';
create index payment_events_received_at_idx on public.payment_events (received_at);

revoke all on function public.delete_expired_records(
  timestamptz, timestamptz, timestamptz, text[], integer
) from public, anon, authenticated;
grant execute on function public.delete_expired_records(
  timestamptz, timestamptz, timestamptz, text[], integer
) to service_role;
