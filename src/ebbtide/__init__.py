"""ebbtide: a Reverse ETL engine.

`ebbtide.Workspace.load(path)` is the Python API (see `ebbtide.workspace_api`); it is imported
on first use, so that `import ebbtide` (and the CLI's start-up) stays cheap: not even `typing`.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ebbtide.workspace_api import SyncAllResult, Workspace

__all__ = ["SyncAllResult", "Workspace"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from ebbtide import workspace_api

        return getattr(workspace_api, name)
    raise AttributeError(f"module 'ebbtide' has no attribute {name!r}")
