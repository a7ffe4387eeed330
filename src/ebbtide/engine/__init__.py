"""The sync engine: extract → diff → map → load → commit. Imports no driver."""
