"""The crash soak: `python -m soak` (or `make soak`) kills syncs at random and checks recovery."""
