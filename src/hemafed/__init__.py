"""hemafed: federated data and AI for haematology research networks.

Sites (hospitals) keep their patients; researchers run statistics, survival analysis,
model training and synthetic-data generation across all of them through secure sums.
"""

__version__ = "0.1.0"

__all__ = ["Client", "Connection", "__version__", "connect"]


def __getattr__(name: str) -> object:
    # lazy, so `import hemafed` (and the CLI) stays light
    if name in ("connect", "Connection"):
        from hemafed import connection

        return getattr(connection, name)
    if name == "Client":
        # the hub service client needs the `service` extra (httpx); the core install does not
        try:
            from hemafed.service.client import Client
        except ModuleNotFoundError as e:
            raise ImportError(
                f"hemafed.Client needs the service extra (missing module {e.name!r}): "
                "pip install 'hemafed[service]'") from e
        return Client
    raise AttributeError(f"module 'hemafed' has no attribute {name!r}")
