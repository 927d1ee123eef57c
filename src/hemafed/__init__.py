"""hemafed: federated data and AI for haematology research networks.

Sites (hospitals) keep their patients; researchers run statistics, survival analysis,
model training and synthetic-data generation across all of them through secure sums.
"""

__version__ = "0.1.0"
