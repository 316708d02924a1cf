"""Where the work items of a Gram pass or an export run.

Both engines run the same units of work (`gram.item_gram`, `export.export_item`) and add their
results in the same fixed order, so they give the same numbers and the same files:

    LocalEngine (relex_core.gram)      this process: a reading thread ahead of product threads
    RayEngine (relex_core.engines.ray) Ray tasks on a cluster whose nodes see the run at the same paths

Ray is imported only when a RayEngine is asked for (`--ray`); `import relex_core` never loads it.
"""

import os


def ray_address(option) -> str | None:
    """The cluster `--ray [ADDRESS]` names: the address given, else $RAY_ADDRESS, else 'auto' (the
    cluster started on this node); None without --ray (the local engine)."""
    if option is None:
        return None
    return option or os.environ.get("RAY_ADDRESS") or "auto"


def engine_for(option):
    """The engine for `--ray`'s value: None (the local one) or a `RayEngine` (connected at first use)."""
    address = ray_address(option)
    if address is None:
        return None
    from .ray import RayEngine

    return RayEngine(address)


def __getattr__(name):
    """`from relex_core.engines import RayEngine` imports Ray then, and only then."""
    if name == "RayEngine":
        from .ray import RayEngine

        return RayEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
