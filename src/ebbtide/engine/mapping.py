"""The old home of the mapping compiler, kept for `config/workspace.py` (owned elsewhere while
issue 12 is built). New code imports `ebbtide.mapping.compiler`."""

from ebbtide.mapping.compiler import compile_mapping as compile_mapping
