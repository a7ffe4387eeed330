"""What `ebbtide serve` runs: the scheduler loop now; the REST API and the web UI next."""
