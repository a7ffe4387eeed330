"""`make bench`: sync speed and memory of ebbtide on 1M- and 10M-row models (see README.md)."""
