"""The web UI of `ebbtide serve`: server-rendered pages over the same services as the API."""
