"""A small smoke run of the benchmark: its numbers are not asserted on timing,
only on what must hold whatever the machine (completion, writes per reply)."""

import io
import json

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_it_benchmarks_two_clients_end_to_end():
    out = io.StringIO()
    call_command(
        "benchstreams", clients=2, rounds=2, tokens=20, delay=0.005, first_delay=0, spread=0, json=True, stdout=out
    )
    report = json.loads(out.getvalue())
    assert report["clients_completed"] == 2 and report["errors"] == []
    assert report["replies"] == 4
    assert report["tokens_delivered"] == 4 * 20
    assert report["db_writes_per_reply"] == 4  # user message, reply row, activity, the one final save
    assert report["db_writes_by_table"]["UPDATE conversations_message"] == 4
    assert report["latency_ms_p50"] >= 0 and report["server_cpu_seconds"] > 0
