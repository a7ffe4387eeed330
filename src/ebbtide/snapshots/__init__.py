"""Snapshot stores: per mapping, primary key → hash of the row the destination accepted."""
