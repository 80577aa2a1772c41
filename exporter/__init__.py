"""ksense exporter: kernel friction signals (eBPF, /proc) -> Prometheus and kernel_metrics.csv."""
