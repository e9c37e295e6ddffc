"""What an operator watches: ``/metrics`` and JSON logs of a real ``travelbot webhook`` process.

Two travellers search the same route through the webhook and one of them books and pays; the
scrape is then parsed with prometheus_client's own text parser, and every log line must be one
JSON object. Neither may carry what the traveller typed about themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_conversation_e2e import TRAVELLER, TRAVELLER_REST, to_payment, to_results
from tests.test_workers import new_user, pay_on, reference_of, running_workers

# The full name is typed in one answer and stored as first and last name: look for each.
NAME, *BORN = TRAVELLER
PERSONAL = [*NAME.split(), *BORN, *TRAVELLER_REST[1:]]  # names, birth date, passport, expiry, email


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.timeout(120)
async def test_a_worker_reports_traffic_in_metrics_and_json_logs(
    tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("METRICS_TOKEN", "scraper-secret")
    async with running_workers(
        tmp_path, count=1, redis_url=redis_url, redis_prefix=redis_prefix
    ) as cluster:
        kit = cluster.kit
        (worker,) = cluster.workers
        await cluster.route_to(worker)
        booker, browser = new_user(), new_user()
        await to_payment(kit, booker)
        reference = await reference_of(kit, booker)
        await pay_on(worker, kit, booker)
        await to_results(kit, browser)  # the same route: answered from the cache

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{worker.base_url}/metrics") as refused:
                assert refused.status == 401  # the port is public: scrapers show the token
            async with http.get(
                f"{worker.base_url}/metrics", headers={"Authorization": "Bearer scraper-secret"}
            ) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
        assert await worker.stop() == 0
        output = worker.output()

    samples = _samples(text)
    delivered = len(
        [event for event in kit.sandbox.events() if event.kind.name == "UPDATE_DELIVERED"]
    )
    handled = sum(
        value for (name, _), value in samples.items() if name == "travelbot_updates_total"
    )
    assert handled == delivered >= 18  # the booker's 14 turns to Pay, the browser's 4
    assert _value(samples, "travelbot_updates_total", kind="callback_query", outcome="error") == 0
    assert _value(samples, "travelbot_turn_seconds_count") == handled
    search = {"provider": "demo", "operation": "search"}
    assert _value(samples, "travelbot_provider_calls_total", **search, outcome="ok") == 1
    assert _value(samples, "travelbot_provider_call_seconds_count", **search) == 1
    assert _value(samples, "travelbot_search_cache_lookups_total", result="miss") == 1
    assert _value(samples, "travelbot_search_cache_lookups_total", result="hit") >= 1
    for outcome in ("link_created", "paid", "confirmed"):
        assert _value(samples, "travelbot_payments_total", outcome=outcome) == 1, outcome
    assert _value(samples, "travelbot_payments_total", outcome="refunded") == 0
    assert ("travelbot_broadcast_deliveries_total", frozenset({("outcome", "sent")})) in samples

    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if not line.startswith("travelbot webhook:")]
    assert records, output
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any(reference in record["message"] for record in records)  # the booking's own lines
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], output
    for secret in [*PERSONAL, str(booker)]:
        assert secret.casefold() not in text.casefold(), secret
    for secret in PERSONAL:  # in any case: names are stored upper case ("SILVA")
        assert secret.casefold() not in output.casefold(), secret
