"""Where snapshots go: the Prometheus collector and HTTP server, and durable CSV files."""
