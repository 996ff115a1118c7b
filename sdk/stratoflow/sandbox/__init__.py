"""Flow code in its own process: a zygote forks each run, whose store reaches the API only through a
loopback gateway scoped to the run (``gateway``), with scrubbed credentials (``runtime``)."""
