"""The REST API of `ebbtide serve`: FastAPI routers over the services, under /api/v1."""
