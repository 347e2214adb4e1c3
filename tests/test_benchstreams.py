"""A small smoke run of the benchmark: its numbers are not asserted on timing,
only on structure and on what must hold whatever the machine (completion,
writes per reply)."""

import io
import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from devtools import peers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

FAST = {"tokens": 20, "delay": 0.005, "first_delay": 0, "spread": 0}


def test_it_benchmarks_two_clients_end_to_end(monkeypatch):
    # The server inherits this: no checkpoint may fall inside these short replies.
    monkeypatch.setenv("CHAT_CHECKPOINT_SECONDS", "3600")
    out = io.StringIO()
    call_command("benchstreams", clients=2, rounds=2, json=True, stdout=out, **FAST)
    report = json.loads(out.getvalue())
    assert report["clients_completed"] == 2 and report["errors"] == []
    assert report["replies"] == 4
    assert report["tokens_delivered"] == 4 * 20
    # user message, reply row, activity, the one final save, its usage in the ledger
    assert report["db_writes_per_reply"] == 5
    assert report["db_writes_by_table"]["UPDATE conversations_message"] == 4
    assert report["latency_ms_p50"] >= 0 and report["server_cpu_seconds"] > 0
    assert report["tokens_per_s_peak"] > 0 and report["frames_per_s"] > 0
    # Memory per socket and its growth across rounds: one RSS sample after each round.
    assert len(report["server_rss_after_round_mb"]) == 2
    assert isinstance(report["server_rss_growth_mb"], float)
    assert isinstance(report["server_kb_per_socket"], float)
    # The server's stall monitor ran (its loop-lag sampler started on daphne's loop) and was dumped.
    assert report["server_loop_lag_samples"] > 0
    assert isinstance(report["server_loop_lag_ms_max"], float)
    assert isinstance(report["server_gc_pause_ms_max"], float)
    assert set(report["server_gc_collections"]) == {"0", "1", "2"}
    assert isinstance(report["server_stalls_over_50ms"], int)


def test_the_sse_transport_reads_every_token_through_the_http_api_and_is_compared_with_the_websocket():
    out = io.StringIO()
    call_command("benchstreams", clients=2, rounds=2, transport="sse", json=True, stdout=out, **FAST)
    report = json.loads(out.getvalue())
    assert report["system"] == "app-sse" and report["clients_completed"] == 2 and report["errors"] == []
    assert report["tokens_delivered"] == 4 * 20 and report["server_cpu_ms_per_token_streaming"] > 0
    both = io.StringIO()
    call_command("benchstreams", clients=1, transport="both", stdout=both, **FAST)
    rows = both.getvalue().splitlines()
    assert [row.split()[0] for row in rows[1:3]] == ["app", "app-sse"]
    assert "SSE vs websocket at N=1: cpu per token x" in rows[3]


def test_a_sweep_prints_one_row_per_client_count():
    out = io.StringIO()
    # A knee no run can miss on timing alone: only completion decides here.
    call_command("benchstreams", sweep="1,2", knee_p99_ms=1e9, stdout=out, **FAST)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["system", "N", "done"]
    assert [line.split()[:3] for line in lines[1:3]] == [["app", "1", "1"], ["app", "2", "2"]]
    assert lines[-1].startswith("knee")


def test_a_json_sweep_is_a_list_of_reports():
    out = io.StringIO()
    call_command("benchstreams", sweep="1", json=True, stdout=out, **FAST)
    reports = json.loads(out.getvalue())
    assert [r["clients"] for r in reports] == [1] and reports[0]["clients_completed"] == 1


@pytest.mark.multiworker
@pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: two workers need a shared channel layer")
def test_it_benchmarks_joiners_across_two_workers():
    out = io.StringIO()
    call_command("benchscaleout", conversations=2, tokens=60, delay=0.01, first_delay=0, json=True, stdout=out)
    report = json.loads(out.getvalue())
    assert (report["failed"], report["errors"]) == (0, [])
    assert report["joiners_exact (no gap, no repeat)"] == "2/2"
    assert report["snapshot_ms_p50"] >= 0 and report["frames_per_s"] > 0
    assert report["db_writes_by_table"]["INSERT conversations_message"] == 4


PEER_LINE = {  # the shape of one line of the peer's load generator (../shared/peers/chainlit/load_chainlit.py)
    "n": 20,
    "completed": 20,
    "total_tokens": 4000,
    "delivered_tok_s_avg": 810.5,
    "delivered_tok_s_peak1s": 990,
    "errors": {},
    "lat_ms": {"p50": 5.8, "p95": 50.0, "p99": 56.8, "max": 70.1},
    "server": {"cpu_s_stream_phase": 4.28, "vm_hwm_mb": 180.0},
}


def test_the_peers_report_is_read_under_the_apps_keys_and_compared_as_ratios():
    peer = peers.normalised(PEER_LINE, {"knee_p99_ms": 100})
    assert peer["system"] == "chainlit" and peer["within_knee"] is True
    assert peer["server_cpu_ms_per_token_streaming"] == 1.07
    assert peers.normalised({**PEER_LINE, "completed": 19}, {"knee_p99_ms": 100})["within_knee"] is False
    assert peers.normalised(PEER_LINE, {"knee_p99_ms": 50})["within_knee"] is False
    app = {
        "server_cpu_ms_per_token_streaming": 0.214,
        "latency_ms_p99": 113.6,
        "latency_ms_p50": 29.0,
        "server_peak_rss_mb": 90.0,
    }
    assert peers.ratios(app, peer) == {"cpu_per_token": 5.0, "p99": 0.5, "p50": 0.2, "peak_rss": 2.0}


def test_a_missing_peer_is_refused_before_any_run_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(peers, "PEER_DIR", tmp_path / "no-peer")
    with pytest.raises(peers.PeerUnavailable, match=r"no Chainlit peer at .*CHAT_PEER_DIR"):
        call_command("benchstreams", clients=1, peer="chainlit", stdout=io.StringIO(), **FAST)
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / "run_chainlit_series.sh").write_text("exit 1\n")
    monkeypatch.setattr(peers, "PEER_DIR", tmp_path / "peer")
    monkeypatch.setattr(peers, "PEER_VENV", tmp_path / "no-venv")
    with pytest.raises(peers.PeerUnavailable, match="README"):
        call_command("benchstreams", clients=1, peer="chainlit", stdout=io.StringIO(), **FAST)


@pytest.mark.skipif(not peers.available(), reason="no Chainlit peer (see ../shared/peers/chainlit/README.md)")
def test_it_runs_chainlit_and_the_app_back_to_back_and_reports_both(monkeypatch):
    # Chainlit takes DATABASE_URL as its own data layer's: the peer must not see ours.
    monkeypatch.setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
    out = io.StringIO()
    call_command("benchstreams", clients=2, peer="chainlit", json=True, stdout=out, **FAST)
    report = json.loads(out.getvalue())
    (row,) = report["rows"]
    assert row["app"]["clients_completed"] == row["chainlit"]["clients_completed"] == 2
    assert row["chainlit"]["tokens_delivered"] == row["app"]["tokens_delivered"] == 2 * 20
    assert set(row["ratio"]) == {"cpu_per_token", "p99", "p50", "peak_rss"}


def test_the_tracemalloc_growth_names_the_line_that_kept_memory(tmp_path):
    import tracemalloc

    from devtools.instrumentation import growth

    tracemalloc.start(5)
    try:
        tracemalloc.take_snapshot().dump(str(tmp_path / "1.snapshot"))
        kept = [bytes(1000) + bytes([i % 256]) for i in range(2000)]  # about 2 MB, held
        tracemalloc.take_snapshot().dump(str(tmp_path / "2.snapshot"))
    finally:
        tracemalloc.stop()
    lines = growth(tmp_path / "1.snapshot", tmp_path / "2.snapshot")
    assert len(kept) == 2000
    total = float(lines[0].split()[0])
    assert total > 1900  # KB traced in all
    assert any("test_benchstreams.py" in line for line in lines[1:3])


@pytest.mark.skipif(not settings.REDIS_URL, reason="two workers need Redis (the PostgreSQL + Redis pass)")
def test_two_workers_share_the_clients_and_report_their_sums(monkeypatch):
    monkeypatch.setenv("CHAT_CHECKPOINT_SECONDS", "3600")
    out = io.StringIO()
    call_command("benchstreams", clients=4, workers=2, json=True, stdout=out, **FAST)
    report = json.loads(out.getvalue())
    assert report["workers"] == 2
    assert report["clients_completed"] == 4 and report["tokens_delivered"] == 4 * 20
    # Each worker streamed two of the replies: both used CPU, and the writes are both workers'.
    assert len(report["server_cpu_seconds_by_worker"]) == 2
    assert all(cpu > 0 for cpu in report["server_cpu_seconds_by_worker"])
    assert report["db_writes_per_reply"] == 5
    assert report["server_loop_lag_samples"] > 0


def test_two_workers_without_redis_are_refused_clearly(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("benchstreams", clients=2, workers=2, stdout=io.StringIO(), **FAST)


def test_the_stalls_of_two_workers_merge_into_one_report():
    from devtools.management.commands.benchstreams import merged_stalls, merged_writes

    def stalls(lag, pause, counts):
        return {
            "lag_samples": 10, "max_lag_ms": lag, "lags": [[1.0, lag]], "gc_counts": counts,
            "gc_max_ms": {"0": pause, "1": 0.0, "2": 0.0}, "gc_total_ms": pause, "gc_pauses": [[2.0, 0, pause]],
            "record_ms": 5,
        }  # fmt: skip

    merged = merged_stalls([stalls(12.0, 3.0, {"0": 1, "1": 0, "2": 0}), stalls(40.0, 1.0, {"0": 2, "1": 1, "2": 0})])
    assert merged["max_lag_ms"] == 40.0 and merged["lag_samples"] == 20
    assert merged["lags"] == [[1.0, 12.0], [1.0, 40.0]]
    assert merged["gc_counts"] == {"0": 3, "1": 1, "2": 0}
    assert merged["gc_max_ms"]["0"] == 3.0 and merged["gc_total_ms"] == 4.0
    assert merged_writes([{"INSERT a": 1}, {"INSERT a": 2, "UPDATE b": 1}]) == {"INSERT a": 3, "UPDATE b": 1}
    assert merged_writes([{"INSERT a": 1}, None]) is None
