-- One sender per broadcast across worker processes.
--
-- The worker delivering a broadcast holds a lease (its id and an expiry) that it renews while it
-- sends. Another worker takes a running broadcast over only when the lease is free or expired:
-- two senders would double the rate Telegram sees, and a live sender's in-flight rows must not
-- be recovered as 'interrupted' by a worker that merely restarted.

alter table public.broadcasts
  add column lease_owner text,
  add column lease_until timestamptz;

-- Take or renew the lease; returns the broadcast's id when this owner holds it now.
create function public.claim_broadcast_lease(
  p_broadcast_id bigint, p_owner text, p_now timestamptz, p_until timestamptz
)
returns table (id bigint)
language sql
volatile
set search_path = ''
as $$
  update public.broadcasts as b
     set lease_owner = p_owner, lease_until = p_until
   where b.id = p_broadcast_id
     and b.status = 'running'
     and (b.lease_owner is null or b.lease_owner = p_owner or b.lease_until < p_now)
  returning b.id;
$$;

revoke all on function public.claim_broadcast_lease(bigint, text, timestamptz, timestamptz)
  from public, anon, authenticated;
grant execute on function public.claim_broadcast_lease(bigint, text, timestamptz, timestamptz)
  to service_role;
