#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json from the panel lists below.

Dashboards are data: keeping them as a short list of (title, PromQL) here makes
review easy and keeps every dashboard consistent. Run after editing:
    python3 scripts/gen-dashboards.py
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}

DASHBOARDS = {
    "courier-queue": ("Courier / Queue", [
        ("Jobs enqueued /s by kind", 'sum by (kind) (rate(courier_jobs_enqueued_total[5m]))', "timeseries", "ops"),
        ("Jobs finished /s by outcome", 'sum by (outcome) (rate(courier_jobs_finished_total[5m]))', "timeseries", "ops"),
        ("Queue depth by state", 'sum by (state) (courier_queue_depth)', "timeseries", "short"),
        ("Queue depth by kind (runnable)", 'sum by (kind) (courier_queue_depth{state=~"available|scheduled|retryable"})', "timeseries", "short"),
        ("Snoozes /s by reason", 'sum by (reason) (rate(courier_jobs_snoozed_total[5m]))', "timeseries", "ops"),
        ("Job wait p95 by kind", 'histogram_quantile(0.95, sum by (le, kind) (rate(courier_job_wait_seconds_bucket[5m])))', "timeseries", "s"),
        ("Job run time p95 by kind", 'histogram_quantile(0.95, sum by (le, kind) (rate(courier_job_run_seconds_bucket[5m])))', "timeseries", "s"),
        ("Leases held", 'sum(courier_account_lease_held)', "stat", "short"),
    ]),
    "courier-accounts": ("Courier / Accounts", [
        ("Accounts by status", 'sum by (status) (courier_accounts)', "timeseries", "short"),
        ("Budget used / limit (minute)", 'max by (account) (courier_account_budget_used{window="minute"}) / max by (account) (courier_account_budget_limit{window="minute"})', "timeseries", "percentunit"),
        ("Budget used / limit (hour)", 'max by (account) (courier_account_budget_used{window="hour"}) / max by (account) (courier_account_budget_limit{window="hour"})', "timeseries", "percentunit"),
        ("Budget used / limit (day)", 'max by (account) (courier_account_budget_used{window="day"}) / max by (account) (courier_account_budget_limit{window="day"})', "timeseries", "percentunit"),
        ("Budget remaining (hour)", 'min by (account) (courier_account_budget_limit{window="hour"} - courier_account_budget_used{window="hour"})', "timeseries", "short"),
        ("Health score", 'max by (account) (courier_account_health_score)', "timeseries", "short"),
        ("Account status", 'max by (account, status) (courier_account_status == 1)', "table", "short"),
        ("Lease held by account", 'max by (account) (courier_account_lease_held)', "timeseries", "short"),
        ("Paused accounts", 'sum(courier_accounts{status="paused"})', "stat", "short"),
        ("Snoozes by reason (budget, pacing, pause)", 'sum by (reason) (increase(courier_jobs_snoozed_total[1h]))', "bargauge", "short"),
    ]),
    "courier-delivery": ("Courier / Delivery funnel", [
        ("Messages by status", 'sum by (status) (courier_messages)', "timeseries", "short"),
        ("Funnel", 'sum by (status) (courier_messages{status=~"queued|sending|sent|delivered|read"})', "bargauge", "short"),
        ("Failed messages", 'sum(courier_messages{status="failed"})', "stat", "short"),
        ("Sent -> delivered p90", 'histogram_quantile(0.9, sum by (le) (rate(courier_ack_latency_seconds_bucket{stage="sent_to_delivered"}[15m])))', "timeseries", "s"),
        ("Delivered -> read p90", 'histogram_quantile(0.9, sum by (le) (rate(courier_ack_latency_seconds_bucket{stage="delivered_to_read"}[15m])))', "timeseries", "s"),
        ("Sends completed /s", 'sum(rate(courier_jobs_finished_total{kind="send",outcome="completed"}[5m]))', "timeseries", "ops"),
    ]),
    "courier-browsers": ("Courier / Browsers", [
        ("Sessions by state", 'sum by (state) (courier_browser_sessions)', "timeseries", "short"),
        ("WebDriver command p95", 'histogram_quantile(0.95, sum by (le, command) (rate(courier_browser_command_seconds_bucket[5m])))', "timeseries", "s"),
        ("Restarts /h by component", 'sum by (component) (increase(courier_browser_restarts_total[1h]))', "timeseries", "short"),
        ("Login transitions /h", 'sum by (to) (increase(courier_login_transitions_total[1h]))', "timeseries", "short"),
    ]),
    "courier-scheduler": ("Courier / Scheduler", [
        ("Scheduler lag", 'max(courier_scheduler_lag_seconds)', "timeseries", "s"),
        ("Expansions /h by outcome", 'sum by (outcome) (increase(courier_scheduler_expansions_total[1h]))', "timeseries", "short"),
        ("Send jobs enqueued /s", 'sum(rate(courier_jobs_enqueued_total{kind="send"}[5m]))', "timeseries", "ops"),
    ]),
    "courier-events": ("Courier / Webhooks and events", [
        ("Webhook deliveries /s by outcome", 'sum by (outcome) (rate(courier_webhook_deliveries_total[5m]))', "timeseries", "ops"),
        ("Webhook delivery latency p99 (event to 2xx)", 'histogram_quantile(0.99, sum by (le) (rate(courier_webhook_delivery_latency_seconds_bucket[5m])))', "timeseries", "s"),
        ("Dead letters (last hour)", 'sum(increase(courier_webhook_dead_letters_total[1h]))', "stat", "short"),
        ("Open event streams", 'sum(courier_event_streams_open)', "stat", "short"),
        ("Dead letters /h", 'sum(increase(courier_webhook_dead_letters_total[1h]))', "timeseries", "short"),
        ("Rows pruned /h by table", 'sum by (table) (increase(courier_rows_pruned_total[1h]))', "timeseries", "short"),
    ]),
    "courier-api": ("Courier / API", [
        ("Requests /s by route", 'sum by (route) (rate(courier_http_requests_total[5m]))', "timeseries", "reqps"),
        ("Errors /s by status", 'sum by (status) (rate(courier_http_requests_total{status=~"4..|5.."}[5m]))', "timeseries", "reqps"),
        ("Latency p99 by route", 'histogram_quantile(0.99, sum by (le, route) (rate(courier_http_request_duration_seconds_bucket[5m])))', "timeseries", "s"),
    ]),
}


def panel(i, title, expr, kind, unit):
    return {
        "id": i + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [{"refId": "A", "datasource": DS, "expr": expr}],
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for uid, (title, panels) in DASHBOARDS.items():
        dash = {
            "uid": uid,
            "title": title,
            "tags": ["courier"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "panels": [panel(i, *p) for i, p in enumerate(panels)],
        }
        (OUT / f"{uid}.json").write_text(json.dumps(dash, indent=2) + "\n")


if __name__ == "__main__":
    main()
