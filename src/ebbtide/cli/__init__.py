"""The `ebbtide` command: parse, call one service, render."""
