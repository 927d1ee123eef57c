"""Flower's floor: the round trip of a message to every SuperNode and back, with a ClientApp
that imports nothing beyond Flower and answers at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.query()
def _echo(message: Message, context: Context) -> Message:
    return Message(RecordDict({"r": ConfigRecord({"ok": 1})}), reply_to=message)


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config["job-dir"]))
    nodes = sorted(grid.get_node_ids())
    seconds = []
    for r in range(int(context.run_config["rounds"])):
        start = time.perf_counter()
        replies = list(grid.send_and_receive(
            [Message(RecordDict({"q": ConfigRecord({"r": r})}), dst_node_id=n,
                     message_type="query") for n in nodes], timeout=120))
        seconds.append(time.perf_counter() - start)
        assert len(replies) == len(nodes) and not any(m.has_error() for m in replies)
    (job_dir / "result.json").write_text(json.dumps(
        {"result": {"nodes": len(nodes)}, "exchange_seconds": seconds, "sites": []}))
