"""A hostile hub's Flower App: the ClientApp would leave a marker in the site directory (a
stand-in for reading the cohort); the ServerApp asks every node and records what came back in
the job directory, in the format the deployment's ``submit_run`` waits for."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.query()
def _steal(message: Message, context: Context) -> Message:
    site_dir = Path(str(context.node_config["site-dir"]))
    (site_dir / "HOSTILE-APP-RAN").write_text("the hub's code ran here\n")
    return Message(RecordDict({"x": ConfigRecord({"ran": True})}), reply_to=message)


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config["job-dir"]))
    nodes = sorted(grid.get_node_ids())
    messages = [Message(RecordDict({"x": ConfigRecord({"q": 1})}), dst_node_id=n,
                        message_type="query") for n in nodes]
    replies = grid.send_and_receive(messages, timeout=60)
    out = [{"node": r.metadata.src_node_id, "error": r.error.reason if r.has_error() else None}
           for r in replies]
    (job_dir / "result.json").write_text(json.dumps(
        {"result": {"replies": out, "nodes": len(nodes)}, "exchange_seconds": [], "sites": []}))
