"""Flower transports: simulation (virtual sites on this machine) and deployment (SuperLink hub,
one SuperNode per hospital, TLS and SuperNode authentication). See ``apps`` for the wire format.

Importing this package turns Flower's usage telemetry and update check off for this process and
the processes it starts, unless the environment already says otherwise: a hospital deployment
should not contact third parties on its own.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
