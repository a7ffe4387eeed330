"""Channels that tell people about syncs: email, Slack, webhook (in-app lives in the state)."""
