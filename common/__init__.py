"""What the components share, and nothing that belongs to one of them.

Why it exists: the exporter, the scorer, the scheduler and the dashboards each stand alone (their
images ship only their own package and this one) and import no other component; what they all
need lives here once: the metric/label/column names (names.py, the cross-component contract),
the environment reader (envconf.py), logging (logs.py), the drift-free ticker (ticker.py), the
CSV sink and queued writer (csvfile.py), the bounded HTTP server and the metrics registry and
server (httpserver.py, metrics.py), the deadline-bound HTTP client (deadline_http.py) and the
HTTP failure -> reason mapping (http_reason.py). `common.core` is the pure part: values and
functions without I/O, clock or threads. import-linter (pyproject.toml) keeps `common` free of
every component.
"""
