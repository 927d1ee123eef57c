"""Flower ServerApp and ClientApp that carry the hub/site byte protocol over the Message API.

Wire format (all messages have ``message_type="query.hemafed"``): the content is a RecordDict
with one ConfigRecord ``"hemafed"``:

* ``{"kind": "hello"}`` -> reply ``{"site_id": str}``: the hub learns which Flower node is which
  site (used in simulation and deployment alike, so node ids never leak into the protocol);
* ``{"kind": "exchange", "payload": bytes}`` -> reply ``{"payload": bytes}``.

Site state lives in ``context.state["hemafed.site-state"]`` (a ConfigRecord of bytes), which Flower
keeps per node across the messages of a run, so the handler is rebuilt for every message.

Which site a ClientApp is:

* simulation: ``sites[node_config["partition-id"]]`` from the site list given to
  :func:`make_client_app` (captured in the app object, which Ray ships to its workers);
* deployment: the site worker (:mod:`hemafed.federation.flower.site_worker`) passes its own
  site configuration; a ClientApp loaded by Flower itself reads ``node_config["site-dir"]`` (and
  optional ``node_config["site-id"]``, default: the directory name).

The site handler factory is fixed at the site (the worker's ``--handler-factory``, or
``node_config["handler-factory"]``, default :func:`hemafed.study.site_runtime.site_handler`);
the hub's run config cannot name it.

The module-level :data:`server_app` and :data:`client_app` are the deployment components named in
the shipped Flower App (``hemafed/federation/flower/app/pyproject.toml``). The deployment ServerApp
reads ``run_config["job-dir"]``: ``request.json`` there says which ``hub_main`` to run with which
config; it writes ``result.json`` (or ``error.json``) back into the same directory.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from hemafed import atomic
from hemafed.errors import InvalidInput, ProtocolError
from hemafed.federation.transport import (
    HubMain,
    check_site_id,
    encode_result,
    load_handler_factory,
    load_hub_main,
    site_config,
)

log = logging.getLogger(__name__)

MESSAGE_TYPE = "query.hemafed"
RECORD = "hemafed"
STATE_RECORD = "hemafed.site-state"
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
PROGRESS_FILE = "progress.jsonl"


# ---------------------------------------------------------------------------------------- site


def _site_of(context: Context, sites: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The site configuration of the node running this ClientApp."""
    if sites is not None:
        pid = int(context.node_config["partition-id"])
        return dict(sites[pid])
    site_dir = context.node_config.get("site-dir")
    if not isinstance(site_dir, str) or not site_dir:
        raise InvalidInput("this SuperNode has no site directory: start it with "
                           "--node-config \"site-dir='/path/to/site'\"")
    site_id = context.node_config.get("site-id")
    return site_config(site_dir, str(site_id) if site_id is not None else None)


def _load_state(context: Context) -> dict[str, bytes]:
    record = context.state.config_records.get(STATE_RECORD)
    return {} if record is None else {str(k): bytes(v) for k, v in record.items()}  # type: ignore[arg-type]


def _check_state(state: MutableMapping[str, bytes], site_id: str) -> None:
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise ProtocolError(f"site {site_id!r}: handler state must map str to bytes; "
                                f"key {key!r} holds {type(value).__name__}")


def _reply(message: Message, **fields: Any) -> Message:
    return Message(RecordDict({RECORD: ConfigRecord(fields)}), reply_to=message)


DEFAULT_SITE_HANDLER = "hemafed.study.site_runtime:site_handler"


def make_client_app(*, sites: Sequence[Mapping[str, Any]] | None = None,
                    site: Mapping[str, Any] | None = None,
                    handler_factory: str | None = None) -> ClientApp:
    """A ClientApp answering hello and exchange messages with the site's handler.

    With ``sites`` (simulation) the site is picked by partition id; with ``site`` (the site
    worker) it is that one; with neither it comes from the node config. ``handler_factory``
    defaults to ``node_config["handler-factory"]`` or :data:`DEFAULT_SITE_HANDLER`: a site
    setting, never the hub's run config.
    """
    site_list = [dict(s) for s in sites] if sites is not None else None
    fixed_site = dict(site) if site is not None else None
    app = ClientApp()

    @app.query("hemafed")
    def _query(message: Message, context: Context) -> Message:
        record = message.content.config_records[RECORD]
        site = fixed_site if fixed_site is not None else _site_of(context, site_list)
        kind = record.get("kind")
        if kind == "hello":
            return _reply(message, site_id=site["site_id"])
        if kind != "exchange":
            raise ProtocolError(f"site {site['site_id']!r}: unknown message kind {kind!r}")
        spec = handler_factory or str(context.node_config.get("handler-factory",
                                                              DEFAULT_SITE_HANDLER))
        handler = load_handler_factory(spec)(site)
        state = _load_state(context)
        payload = record["payload"]
        if not isinstance(payload, bytes):
            raise ProtocolError(f"site {site['site_id']!r}: exchange payload is not bytes")
        reply = handler(payload, state)
        if not isinstance(reply, bytes):
            raise ProtocolError(f"site {site['site_id']!r}: handler returned "
                                f"{type(reply).__name__}, expected bytes")
        _check_state(state, site["site_id"])
        context.state.config_records[STATE_RECORD] = ConfigRecord(dict(state))  # type: ignore[arg-type]
        return _reply(message, payload=reply)

    return app


# ---------------------------------------------------------------------------------------- hub


class GridExchange:
    """The hub's :data:`~hemafed.federation.transport.Exchange` over a Flower ``Grid``.

    Replies are pulled with a short, growing interval (``poll_min`` up to ``poll_max`` seconds)
    rather than ``Grid.send_and_receive``'s fixed one (0.1 s in simulation), because a secure
    aggregation is several short round trips in a row and the wait is paid on each.
    """

    poll_min = 0.005
    poll_max = 0.1

    def __init__(self, grid: Grid, node_of_site: Mapping[str, int], timeout: float,
                 progress: Path | None = None) -> None:
        if timeout <= 0:
            raise InvalidInput(f"exchange timeout must be > 0 seconds, got {timeout}")
        self.grid = grid
        self.node_of_site = dict(node_of_site)
        self.site_of_node = {node: site for site, node in self.node_of_site.items()}
        self.timeout = timeout
        self.round_trips = 0
        self.seconds: list[float] = []
        self.progress = progress

    def __call__(self, messages: dict[str, bytes]) -> dict[str, bytes]:
        unknown = sorted(set(messages) - set(self.node_of_site))
        if unknown:
            raise ProtocolError(f"exchange {self.round_trips}: no site with id(s) {unknown}; "
                                f"known sites are {sorted(self.node_of_site)}")
        out = []
        for site_id, payload in messages.items():
            if not isinstance(payload, bytes):
                raise ProtocolError(f"exchange {self.round_trips}: message for site {site_id!r} "
                                    f"must be bytes, got {type(payload).__name__}")
            content = RecordDict({RECORD: ConfigRecord({"kind": "exchange", "payload": payload})})
            out.append(Message(content, dst_node_id=self.node_of_site[site_id],
                               message_type=MESSAGE_TYPE, ttl=self.timeout + 5.0,
                               group_id=f"exchange-{self.round_trips}"))
        started = time.perf_counter()
        replies = self._send_and_receive(out) if out else []
        self.seconds.append(time.perf_counter() - started)
        result: dict[str, bytes] = {}
        for reply in replies:
            sender = self.site_of_node.get(reply.metadata.src_node_id)
            if sender is None:
                log.warning("exchange %d: reply from unknown node ignored", self.round_trips)
                continue
            if reply.has_error():
                log.warning("exchange %d: site %s failed (%s); counted as dropped",
                            self.round_trips, sender, reply.error.reason)
                continue
            answer = reply.content.config_records[RECORD].get("payload")
            if not isinstance(answer, bytes):
                log.warning("exchange %d: site %s sent no payload; counted as dropped",
                            self.round_trips, sender)
                continue
            result[sender] = answer
        dropped = sorted(set(messages) - set(result))
        log.info("exchange %d: %d site(s) answered in %.2f s%s", self.round_trips, len(result),
                 self.seconds[-1], f"; dropped {dropped}" if dropped else "")
        if self.progress is not None:
            # one line per exchange, appended: the hub CLI shows it while the run goes on
            with open(self.progress, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"exchange": self.round_trips, "answered": sorted(result),
                                     "dropped": dropped, "seconds": self.seconds[-1]}) + "\n")
        self.round_trips += 1
        return result


    def _send_and_receive(self, messages: list[Message]) -> list[Message]:
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + self.timeout
        replies: list[Message] = []
        pause = self.poll_min
        while waiting:
            got = list(self.grid.pull_messages(waiting))
            replies.extend(got)
            waiting -= {m.metadata.reply_to_message_id for m in got}
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, self.poll_max)
        return replies


def discover_sites(grid: Grid, *, expected: int | None, timeout: float) -> dict[str, int]:
    """Map site ids to Flower node ids: wait for ``expected`` nodes, then ask each its site id.

    Stops as soon as ``expected`` sites identified themselves (a node the SuperLink still lists
    but that was killed would otherwise hold the run for the whole ``timeout``); without
    ``expected``, waits for every listed node up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while expected is not None and len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    if not nodes:
        raise ProtocolError(f"no site connected within {timeout:g} s; are the SuperNodes running "
                            "and registered?")
    node_of_site: dict[str, int] = {}
    waiting = set(nodes)
    while waiting and time.monotonic() < deadline:
        # Ask again only nodes whose hello failed (e.g. a worker still starting): a second hello
        # in flight could be handled concurrently with a later message and, in simulation,
        # overwrite that message's update of the node's context.state.
        wait = max(deadline - time.monotonic(), 1.0)
        hello = [Message(RecordDict({RECORD: ConfigRecord({"kind": "hello"})}), dst_node_id=node,
                         message_type=MESSAGE_TYPE, ttl=wait, group_id="hello")
                 for node in sorted(waiting)]
        pending = set(grid.push_messages(hello))
        failed = False
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                node = reply.metadata.src_node_id
                if reply.has_error():
                    log.warning("node %d did not identify itself: %s", node,
                                reply.error.reason)
                    failed = True
                    continue
                site_id = check_site_id(str(reply.content.config_records[RECORD]["site_id"]))
                if node_of_site.get(site_id, node) != node:
                    raise ProtocolError(f"two nodes claim site id {site_id!r}; give each "
                                        "SuperNode its own site directory / site-id")
                node_of_site[site_id] = node
                waiting.discard(node)
            if expected is not None and len(node_of_site) >= expected:
                waiting.clear()
                break
            time.sleep(0.05)
        if not failed:
            break
        time.sleep(0.5)
    if not node_of_site:
        raise ProtocolError(f"no site identified itself within {timeout:g} s; see the "
                            "SuperNode / simulation logs")
    if expected is not None and len(node_of_site) < expected:
        log.warning("only %d of %d expected sites answered: %s", len(node_of_site), expected,
                    sorted(node_of_site))
    log.info("sites: %s", sorted(node_of_site))
    return node_of_site


def run_hub(grid: Grid, hub_main: HubMain, config: dict[str, Any], *, expected: int | None,
            timeout: float, connect_timeout: float,
            progress: Path | None = None) -> tuple[Any, GridExchange]:
    """Discover the sites, then run ``hub_main`` over a :class:`GridExchange`."""
    node_of_site = discover_sites(grid, expected=expected, timeout=connect_timeout)
    exchange = GridExchange(grid, node_of_site, timeout, progress)
    result = hub_main(exchange, sorted(node_of_site), config)
    return result, exchange


def make_server_app(hub_main: HubMain, config: Mapping[str, Any], sink: dict[str, Any], *,
                    expected: int, timeout: float, connect_timeout: float) -> ServerApp:
    """A ServerApp (for in-process simulation) that puts the hub result into ``sink``."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        result, exchange = run_hub(grid, hub_main, dict(config), expected=expected,
                                   timeout=timeout, connect_timeout=connect_timeout)
        sink["result"] = result
        sink["exchange_seconds"] = list(exchange.seconds)

    return app


def _deployment_main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config.get("job-dir", "")))
    if not (job_dir / REQUEST_FILE).is_file():
        raise InvalidInput(f"run config 'job-dir' ({job_dir}) has no {REQUEST_FILE}; submit runs "
                           "with hemafed.federation.flower.deployment.submit_run")
    try:
        request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
        result, exchange = run_hub(
            grid, load_hub_main(request["hub_main"]), dict(request["config"]),
            expected=request.get("expected_sites"), timeout=float(request["timeout"]),
            connect_timeout=float(request["connect_timeout"]), progress=job_dir / PROGRESS_FILE)
        body = {"result": json.loads(encode_result(result)), "exchange_seconds": exchange.seconds,
                "sites": sorted(exchange.node_of_site)}
        atomic.write_text(job_dir / RESULT_FILE, json.dumps(body))
    except Exception as err:
        atomic.write_text(job_dir / ERROR_FILE, json.dumps({
            "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}))
        raise


server_app = ServerApp()
server_app.main()(_deployment_main)

client_app = make_client_app()
