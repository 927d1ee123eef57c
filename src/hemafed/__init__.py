"""hemafed: federated data and AI for haematology research networks.

Sites (hospitals) keep their patients; researchers run statistics, survival analysis,
model training and synthetic-data generation across all of them through secure sums.
"""

__version__ = "0.1.0"

__all__ = ["Connection", "__version__", "connect"]


def __getattr__(name: str) -> object:
    # lazy, so `import hemafed` (and the CLI) stays light
    if name in ("connect", "Connection"):
        from hemafed import connection

        return getattr(connection, name)
    raise AttributeError(f"module 'hemafed' has no attribute {name!r}")
