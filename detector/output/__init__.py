"""What the engines emit: alert transitions and notifications (``alerts``), the
book of pending and firing alerts and their resend schedule (``alert_book``),
the payloads sinks send (``notify``), and Prometheus's template language for
labels and annotations (``templates``)."""
