"""Services: what the CLI, the API and the scheduler call. Each one is a function call away."""
