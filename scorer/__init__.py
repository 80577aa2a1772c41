"""ksense scorer: fuzzy node scores and admission decisions from the exporters' signals."""
