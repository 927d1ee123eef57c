"""Flower ServerApp and ClientApp that carry the hub/site byte protocol over the Message API.

Wire format (all messages have ``message_type="query.hemafed"``): the content is a RecordDict
with one ConfigRecord ``"hemafed"``:

* ``{"kind": "hello"}`` -> reply ``{"site_id": str}``: the hub learns which Flower node is which
  site (used in simulation and deployment alike, so node ids never leak into the protocol);
* ``{"kind": "exchange", "payload": bytes}`` -> reply ``{"payload": bytes}``;
* ``{"kind": "hold", "seconds": float}`` -> an empty reply, sent only after ``seconds`` (capped
  by the site): deployment only, see :class:`KeepWarm`. It carries and returns nothing derived
  from data and is not an analysis request (no handler, no audit entry, no ledger, no plan round).

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
import math
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
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
HOLD_KIND = "hold"
DEFAULT_HOLD_SECONDS = 0.8
"""The hub's hold (``tau``) in deployment, from ``benchmarks/bench_deploy.py`` (docs/benchmarks.md):
it must cover the hub's turnaround from the last site's reply to its next message (0.05-0.3 s
quiet) and, under load, the SuperNode's slower steps; 0.4 s was too short at load 9-14."""
HOLD_TTL_SECONDS = 30.0
"""How long a hold waits at the SuperLink behind the exchange message it follows: a stale hold
is only a short pause at that site, and one that expires is only a missed keep-warm."""


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


def hold_seconds(requested: object, cap: float) -> float:
    """How long the site holds a hold message: the hub's ``seconds``, at most ``cap``."""
    if (isinstance(requested, bool) or not isinstance(requested, int | float)
            or not math.isfinite(requested) or requested < 0):
        raise ProtocolError(f"hold message: 'seconds' must be a number >= 0, got {requested!r}")
    return min(float(requested), cap)


def make_client_app(*, sites: Sequence[Mapping[str, Any]] | None = None,
                    site: Mapping[str, Any] | None = None,
                    handler_factory: str | None = None, hold_cap: float = 0.0,
                    wait: Callable[[float], object] = time.sleep) -> ClientApp:
    """A ClientApp answering hello and exchange messages with the site's handler.

    With ``sites`` (simulation) the site is picked by partition id; with ``site`` (the site
    worker) it is that one; with neither it comes from the node config. ``handler_factory``
    defaults to ``node_config["handler-factory"]`` or :data:`DEFAULT_SITE_HANDLER`: a site
    setting, never the hub's run config.

    A hold message is answered with an empty reply after ``wait(min(seconds, hold_cap))``,
    before any site, state or handler is touched (the site worker passes its cap and a wait
    that its shutdown interrupts; a ClientApp Flower starts per message answers at once).
    """
    if not 0 <= hold_cap < math.inf:
        raise InvalidInput(f"hold cap must be >= 0 seconds, got {hold_cap}")
    site_list = [dict(s) for s in sites] if sites is not None else None
    fixed_site = dict(site) if site is not None else None
    app = ClientApp()

    @app.query("hemafed")
    def _query(message: Message, context: Context) -> Message:
        record = message.content.config_records[RECORD]
        kind = record.get("kind")
        if kind == HOLD_KIND:
            wait(hold_seconds(record.get("seconds"), hold_cap))
            return Message(RecordDict(), reply_to=message)
        site = fixed_site if fixed_site is not None else _site_of(context, site_list)
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


class KeepWarm:
    """Hold messages that keep each site's SuperNode busy while the hub is not ready for it.

    Flower 1.42's SuperNode pulls one message, waits (0.5 s ticks) for its reply, pushes it and
    pulls again at once; if that pull finds nothing it sleeps 3 s
    (``flwr/supernode/start_client_internal.py``). The hub's next message comes after the last
    site's reply plus its own turnaround, i.e. after the earlier sites' empty pulls, so without
    holds nearly every exchange pays the 3 s. Holds keep every site's SuperNode in a pull:

    * each message the hub sends is followed by a hold of :attr:`seconds` to the same node
      (pushed with it, so that it is there when the SuperNode pulls right after its reply);
    * while the hub still waits for other sites, a site whose hold is about to end (its reply
      seen, plus :attr:`seconds`, less :attr:`lead`) gets one more (:meth:`rearm`): sites do not
      fall asleep because another site is slow, and never hold more than one spare each.

    The site worker answers a hold (empty) after its seconds; the SuperNode then pulls the hub's
    next message at its next tick. If that message is later than the hold, the SuperNode sleeps
    as it would have anyway. The hub collects (pulls and drops) hold replies with its next pulls
    (:meth:`collect`), so nothing piles up at the SuperLink, and waits for the last ones after
    writing the run's result (:meth:`GridExchange.drain`, bounded); a hold reply that still
    comes after the run has finished is refused by the SuperLink and discarded by the
    SuperNode, which goes on (tested).

    Deployment only: a SuperNode answers its messages one after another, so a hold never runs
    beside the exchange message it follows. Flower's simulation engine runs a node's messages
    on a pool of workers and writes back the context each one started with; a hold finished
    after its exchange message would put back the site's state from before it (the simulation
    sends none: :mod:`hemafed.federation.flower.simulation`).
    """

    rearm_for = 10.0
    """Seconds into an exchange after which no more spares are sent: a wait that long is a slow or
    gone site (up to the exchange timeout), next to which a 3 s sleep is small, while a spare
    every hold at every live site would cost the SuperNodes and workers CPU all along."""

    lead = 0.3
    """Seconds before a hold's estimated end that the next one is pushed: the hub sees a reply
    up to one poll (0.1 s) late, and a site's hold starts up to ~0.2 s after its reply."""

    def __init__(self, seconds: float, ttl: float = HOLD_TTL_SECONDS) -> None:
        if not 0 < seconds < math.inf or not 0 < ttl < math.inf:
            raise InvalidInput(f"hold seconds and TTL must be > 0, got {seconds} and {ttl}")
        self.seconds = float(seconds)
        self.ttl = float(ttl)
        self.pending: dict[str, float] = {}  # hold id -> when to forget it (monotonic)
        self.queue: dict[int, list[str]] = {}  # node -> ids of what it has yet to answer
        self.due: dict[int, float] = {}  # node -> when to push its next hold (monotonic)
        self.sent = 0
        self.collected = 0

    def _holds(self, nodes: Iterable[int], group_id: str,
               after: Sequence[Message]) -> list[Message]:
        # Created after ``after``: the SQLite linkstate hands a node its messages in
        # ``created_at`` order (the in-memory one in insertion order).
        latest = max((m.metadata.created_at for m in after), default=-math.inf)
        holds = []
        for node in nodes:
            hold = Message(RecordDict({RECORD: ConfigRecord({"kind": HOLD_KIND,
                                                             "seconds": self.seconds})}),
                           dst_node_id=node, message_type=MESSAGE_TYPE, ttl=self.ttl,
                           group_id=group_id)
            if hold.metadata.created_at <= latest:
                hold.metadata.created_at = math.nextafter(latest, math.inf)
            holds.append(hold)
        return holds

    def push(self, grid: Grid, messages: list[Message], group_id: str) -> list[str]:
        """Push ``messages``, each followed by a hold to its node; return the messages' ids."""
        holds = self._holds([m.metadata.dst_node_id for m in messages], group_id, messages)
        ids = list(grid.push_messages(messages + holds))
        for message, message_id in zip(messages, ids, strict=False):
            if message_id:
                self.queue.setdefault(message.metadata.dst_node_id, []).append(message_id)
        self._track(holds, ids[len(messages):])
        return ids[:len(messages)]

    def _track(self, holds: Sequence[Message], ids: Iterable[str]) -> None:
        forget = time.monotonic() + self.ttl + 5.0
        for hold, message_id in zip(holds, ids, strict=True):
            if message_id:  # "" / None: the SuperLink did not store it
                self.pending[message_id] = forget
                self.queue.setdefault(hold.metadata.dst_node_id, []).append(message_id)
                self.sent += 1

    def ids(self) -> set[str]:
        """The holds whose replies are still to be collected (forgotten after their TTL)."""
        now = time.monotonic()
        stale = {m for m, forget in self.pending.items() if forget < now}
        for message_id in stale:
            del self.pending[message_id]
        if stale:
            for node, queued in self.queue.items():
                self.queue[node] = [m for m in queued if m not in stale]
        return set(self.pending)

    def collect(self, replies: Iterable[Message]) -> list[Message]:
        """Drop the replies (or errors, e.g. expired) to holds; return the other replies.

        A node answers in the order it was sent to: after a reply it works on the next thing
        queued for it. If that is its last hold, its next hold is due :attr:`seconds` -
        :attr:`lead` from now (not after a hold that failed: the node is likely gone)."""
        now = time.monotonic()
        rest = []
        for reply in replies:
            answered = reply.metadata.reply_to_message_id
            is_hold = self.pending.pop(answered, None) is not None
            if is_hold:
                self.collected += 1
            else:
                rest.append(reply)
            for node, queued in self.queue.items():
                if answered in queued:
                    del queued[:queued.index(answered) + 1]
                    if (queued and queued[-1] in self.pending and len(queued) == 1
                            and not (is_hold and reply.has_error())):
                        self.due[node] = now + self.seconds - self.lead
                    else:
                        self.due.pop(node, None)
                    break
        return rest

    def rearm(self, grid: Grid, group_id: str) -> None:
        """Push one more hold to each node whose current (last) hold is about to end."""
        now = time.monotonic()
        nodes = sorted(node for node, when in self.due.items() if when <= now)
        if not nodes:
            return
        for node in nodes:
            del self.due[node]  # set again when the reply to its current hold comes
        holds = self._holds(nodes, group_id, ())
        self._track(holds, list(grid.push_messages(holds)))

    def stop(self) -> None:
        """No more spares (the exchange is complete: the hub's next message is what counts)."""
        self.due.clear()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FLOWER_REASON = re.compile(r"<class '([^']+)'>:<'(.*)'>", re.S)


def error_summary(reason: str) -> str:
    """The exception a node's error reply names, in one line.

    Flower's reason is ``<class 'pkg.Error'>:<'text'>``; in simulation Ray puts the whole
    traceback into the text, ending with ``... Message: text``.

    >>> error_summary("<class 'hemafed.errors.ProtocolError'>:<'site b: no session'>")
    'ProtocolError: site b: no session'
    """
    text = _ANSI.sub("", str(reason)).strip()
    match = _FLOWER_REASON.fullmatch(text)
    kind, body = (match.group(1).rsplit(".", 1)[-1], match.group(2)) if match else ("", text)
    if "Message: " in body:  # Ray: the ClientApp's exception text is after the last marker
        kind, body = "", body.rsplit("Message: ", 1)[1]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    one = lines[-1] if lines else body
    return (f"{kind}: {one}" if kind else one)[:300]


class GridExchange:
    """The hub's :data:`~hemafed.federation.transport.Exchange` over a Flower ``Grid``.

    Replies are pulled with a short, growing interval (``poll_min`` up to ``poll_max`` seconds)
    rather than ``Grid.send_and_receive``'s fixed one (0.1 s in simulation), because a secure
    aggregation is several short round trips in a row and the wait is paid on each. With
    ``keep_warm`` (deployment) each exchange message is followed by a hold (:class:`KeepWarm`).
    """

    poll_min = 0.005
    poll_max = 0.1

    def __init__(self, grid: Grid, node_of_site: Mapping[str, int], timeout: float,
                 progress: Path | None = None, keep_warm: KeepWarm | None = None) -> None:
        if timeout <= 0:
            raise InvalidInput(f"exchange timeout must be > 0 seconds, got {timeout}")
        self.grid = grid
        self.node_of_site = dict(node_of_site)
        self.site_of_node = {node: site for site, node in self.node_of_site.items()}
        self.timeout = timeout
        self.round_trips = 0
        self.seconds: list[float] = []
        self.progress = progress
        self.keep_warm = keep_warm
        self.drops: list[dict[str, Any]] = []
        """Each site dropped from an exchange, and why (what its node's reply said, or that
        none came in time): the run's result carries it, so a failed step is explained
        without the SuperLink's logs."""

    def _drop(self, site: str, reason: str) -> None:
        log.warning("exchange %d: site %s dropped (%s)", self.round_trips, site, reason)
        self.drops.append({"exchange": self.round_trips, "site": site, "reason": reason[:500]})

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
                self._drop(sender, f"its node replied with an error: "
                                   f"{error_summary(reply.error.reason or '')}")
                continue
            answer = reply.content.config_records[RECORD].get("payload")
            if not isinstance(answer, bytes):
                self._drop(sender, "its reply had no payload")
                continue
            result[sender] = answer
        replied = {self.site_of_node.get(r.metadata.src_node_id) for r in replies}
        for site_id in sorted(set(messages) - replied):
            self._drop(site_id, f"no reply within {self.timeout:g} s")
        dropped = sorted(set(messages) - set(result))
        log.info("exchange %d: %d site(s) answered in %.2f s%s", self.round_trips, len(result),
                 self.seconds[-1], f"; dropped {dropped}" if dropped else "")
        if self.progress is not None:
            # one line per exchange, appended: the hub CLI shows it while the run goes on
            with open(self.progress, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"exchange": self.round_trips, "answered": sorted(result),
                                     "dropped": dropped, "seconds": self.seconds[-1],
                                     "why": {d["site"]: d["reason"] for d in self.drops
                                             if d["exchange"] == self.round_trips}}) + "\n")
        self.round_trips += 1
        return result

    def _send_and_receive(self, messages: list[Message]) -> list[Message]:
        keep_warm = self.keep_warm
        group_id = f"hold-{self.round_trips}"
        if keep_warm is None:
            waiting = set(self.grid.push_messages(messages))
        else:
            waiting = set(keep_warm.push(self.grid, messages, group_id))
        started = time.monotonic()
        deadline = started + self.timeout
        replies: list[Message] = []
        pause = self.poll_min
        while waiting:
            got = self._pull(waiting)
            replies.extend(got)
            waiting -= {m.metadata.reply_to_message_id for m in got}
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            if keep_warm is not None and time.monotonic() - started < keep_warm.rearm_for:
                keep_warm.rearm(self.grid, group_id)
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, self.poll_max)
        if keep_warm is not None:
            keep_warm.stop()
        return replies

    def _pull(self, waiting: set[str]) -> list[Message]:
        """Pull the replies to ``waiting``, and collect (drop) those to earlier holds."""
        if self.keep_warm is None:
            return list(self.grid.pull_messages(waiting))
        return self.keep_warm.collect(self.grid.pull_messages(waiting | self.keep_warm.ids()))

    def drain(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` (default: a hold, plus 2.5 s for the SuperNode's tick and its
        calls) for the replies to the holds still out, then drop the rest.

        Called once the run's result is written: a reply that reaches the SuperLink after the
        run has finished is refused there (one ``Run is finished`` ERROR line in its log per
        site) and discarded by the SuperNode; nothing else happens, but an operator should not
        have to read that after every run."""
        if self.keep_warm is None:
            return
        keep_warm = self.keep_warm
        deadline = time.monotonic() + (keep_warm.seconds + 2.5 if timeout is None else timeout)
        try:
            while keep_warm.ids():
                self._pull(set())
                if not keep_warm.pending or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        except Exception as exc:  # never mask the run's own outcome
            log.debug("collecting holds at the end of the run failed: %s", exc)
        log.info("holds: %d sent, %d collected, %d dropped at the end of the run",
                 keep_warm.sent, keep_warm.collected, len(keep_warm.pending))


def discover_sites(grid: Grid, *, expected: int | None, timeout: float,
                   keep_warm: KeepWarm | None = None) -> dict[str, int]:
    """Map site ids to Flower node ids: wait for ``expected`` nodes, then ask each its site id.

    Stops as soon as ``expected`` sites identified themselves (a node the SuperLink still lists
    but that was killed would otherwise hold the run for the whole ``timeout``); without
    ``expected``, waits for every listed node up to ``timeout``. With ``keep_warm``, each hello
    is followed by a hold, collected by the first exchange.
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
        if keep_warm is None:
            pending = set(grid.push_messages(hello))
        else:
            pending = set(keep_warm.push(grid, hello, "hold"))
        failed = False
        while pending and time.monotonic() < deadline:
            got = (grid.pull_messages(pending) if keep_warm is None
                   else keep_warm.collect(grid.pull_messages(pending | keep_warm.ids())))
            for reply in got:
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
            if keep_warm is not None:
                keep_warm.rearm(grid, "hold")
            time.sleep(0.05)
        if keep_warm is not None:
            keep_warm.stop()
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
            timeout: float, connect_timeout: float, progress: Path | None = None,
            hold: float = 0.0) -> tuple[Any, GridExchange]:
    """Discover the sites, then run ``hub_main`` over a :class:`GridExchange`.

    ``hold`` > 0 sends a hold of that many seconds behind every message (:class:`KeepWarm`;
    deployment only: in simulation nothing sleeps between polls, and a hold only delays);
    the caller drains the last holds (:meth:`GridExchange.drain`) once it has the result."""
    if hold < 0:
        raise InvalidInput(f"hold must be >= 0 seconds (0: no holds), got {hold}")
    keep_warm = KeepWarm(hold) if hold > 0 else None
    node_of_site = discover_sites(grid, expected=expected, timeout=connect_timeout,
                                  keep_warm=keep_warm)
    exchange = GridExchange(grid, node_of_site, timeout, progress, keep_warm)
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
        sink["drops"] = list(exchange.drops)

    return app


def _deployment_main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config.get("job-dir", "")))
    if not (job_dir / REQUEST_FILE).is_file():
        raise InvalidInput(f"run config 'job-dir' ({job_dir}) has no {REQUEST_FILE}; submit runs "
                           "with hemafed.federation.flower.deployment.submit_run")
    exchange: GridExchange | None = None
    try:
        request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
        result, exchange = run_hub(
            grid, load_hub_main(request["hub_main"]), dict(request["config"]),
            expected=request.get("expected_sites"), timeout=float(request["timeout"]),
            connect_timeout=float(request["connect_timeout"]), progress=job_dir / PROGRESS_FILE,
            hold=float(request.get("hold", DEFAULT_HOLD_SECONDS)))
        body = {"result": json.loads(encode_result(result)), "exchange_seconds": exchange.seconds,
                "sites": sorted(exchange.node_of_site), "drops": exchange.drops,
                "holds_sent": exchange.keep_warm.sent if exchange.keep_warm else 0}
        atomic.write_text(job_dir / RESULT_FILE, json.dumps(body))
        exchange.drain()  # after the result: the hub's caller does not wait for it
    except Exception as err:
        atomic.write_text(job_dir / ERROR_FILE, json.dumps({
            "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}))
        raise


server_app = ServerApp()
server_app.main()(_deployment_main)

client_app = make_client_app()
