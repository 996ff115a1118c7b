"""Work pools on SQS: one queue per work queue of a pool, a dead-letter queue per pool, and the
dispatch of due flow runs to them. Executors (Lambda) and workers (processes) consume them."""
