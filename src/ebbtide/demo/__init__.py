"""The demo: a sample warehouse, a local webhook receiver, and a scripted walk-through."""
