"""The demo's live view: alerts and the saturation forecasts that head to their bound."""

from __future__ import annotations

from rich.console import Console

from pipelines.demo import _keep_forecast, _render


def forecast(queue: str, eta, state="pending", high=None) -> dict:
    return {"kind": "forecast", "labels": {"__name__": "pgmq_queue_depth", "queue_name": queue}, "t": 0,
            "eta_seconds": eta, "eta_low_seconds": None if eta is None else eta * 0.7, "eta_high_seconds": high,
            "bound": 10000.0, "bound_name": "pgmq_queue_max_depth", "direction": "up", "value": 8000.0, "state": state}


def test_forecasts_are_shown_soonest_first_and_dropped_when_they_stop_heading():
    kept: dict = {}
    for event in (forecast("orders", 600.0, high=900.0), forecast("payments", 240.0, "firing"),
                  forecast("mail", 300.0), forecast("mail", None, "inactive")):
        _keep_forecast(kept, event)
    console = Console(record=True, width=200)
    console.print(_render({}, kept, [], 1.0, 10.0, 3))
    text = console.export_text()
    orders = 'pgmq_queue_depth{queue_name="orders"} reaches pgmq_queue_max_depth (10000) in about 10m (7m-15m)'
    payments = 'pgmq_queue_depth{queue_name="payments"} reaches pgmq_queue_max_depth (10000) in about 4m (2m-∞)'
    assert orders in text and payments in text
    assert text.index(payments) < text.index(orders)
    assert "mail" not in text
