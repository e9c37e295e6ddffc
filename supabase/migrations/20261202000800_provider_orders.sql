-- Order before charge: the flight provider's order is made when the traveller presses Pay.
--
-- provider_order_id: the provider's order (Duffel order id, Kiwi booking id); one booking each.
-- provider_order_token: what the provider needs besides the id to pay it (Kiwi's transaction
--   id); never shown.
-- airline_reference: the airline's booking reference (PNR), shown in the confirmation.
-- ticket_numbers: the e-ticket numbers once the order is paid, as a JSON array of strings.

alter table public.bookings
  add column provider_order_id text,
  add column provider_order_token text,
  add column airline_reference text,
  add column ticket_numbers jsonb not null default '[]'::jsonb
    check (jsonb_typeof(ticket_numbers) = 'array');

-- Provider webhooks name the order: find its booking without a scan.
create unique index bookings_provider_order_idx on public.bookings (provider_order_id)
  where provider_order_id is not null;
