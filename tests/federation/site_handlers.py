"""A site handler written in the tests, imported by the SuperNodes' ClientApp processes (the
deploy test puts this folder on their PYTHONPATH), speaking the probe's reply format with
vectors scaled by 10, so a result can only match if this handler, named in the run config,
really ran at the sites."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from typing import Any

from probe_reference import expected_vector

SCALE = 10


def scaled_probe_handler(site: dict[str, Any]) -> Callable[[bytes, MutableMapping[str, bytes]],
                                                           bytes]:
    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        round_index = int(json.loads(message)["round"])
        count = int(state.get("n", b"0")) + 1
        state["n"] = str(count).encode()
        vector = [SCALE * v for v in expected_vector(site["site_id"], round_index)]
        return json.dumps({"site_id": site["site_id"], "count": count,
                           "vector": vector}).encode()
    return handle
