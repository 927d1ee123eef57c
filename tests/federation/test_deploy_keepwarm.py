"""Hold messages (the hub's keep-warm in deployment), without a network.

The site side: a hold is answered with an empty reply after at most the site's cap, reaches no
handler and writes no audit entry, and a malformed one is refused. The hub side, over a grid whose
nodes answer in the order they were sent to (as a Flower SuperNode does): every message is
followed by a hold to its node, hold replies never reach the hub's protocol, a node whose hold is
about to end while others are still awaited gets one spare, and a study gives exactly the same
numbers and the same audit entries with holds as without. The real deployment is tested in
``test_flower_deployment.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.serverapp import Grid

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import InvalidInput, ProtocolError
from hemafed.federation.flower.apps import (
    HOLD_KIND,
    MESSAGE_TYPE,
    RECORD,
    GridExchange,
    KeepWarm,
    hold_seconds,
    make_client_app,
    run_hub,
)
from hemafed.federation.flower.site_worker import HOLD_CAP_SECONDS, SiteWorker
from hemafed.federation.transport import site_config
from hemafed.site.store import audit_log, init_site
from hemafed.study.hub import study_hub_main
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "keepwarm", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb"}]}


def _set_hub_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity Flower's ServerApp process gives the hub task (messages carry it)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in {"_task_id": 1, "_run_id": 1, "_node_id": SUPERLINK_NODE_ID}.items():
        monkeypatch.setattr(TaskIdentity, name, value)


@pytest.fixture(autouse=True)
def hub_task(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_hub_task(monkeypatch)


def _message(fields: dict[str, Any], node: int = 7) -> Message:
    msg = Message(RecordDict({RECORD: ConfigRecord(fields)}), dst_node_id=node,
                  message_type=MESSAGE_TYPE, group_id="g")
    msg.metadata.__dict__["_message_id"] = uuid4().hex
    return msg


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


# ------------------------------------------------------------------------------------ site


def test_hold_seconds_is_the_hubs_value_capped_by_the_site() -> None:
    assert hold_seconds(0.8, 2.0) == 0.8
    assert hold_seconds(30, 2.0) == 2.0
    assert hold_seconds(0, 2.0) == 0.0
    for bad in (-1.0, math.nan, math.inf, True, "1", None):
        with pytest.raises(ProtocolError, match="'seconds' must be a number >= 0"):
            hold_seconds(bad, 2.0)


CALLS: list[bytes] = []


def echo_handler(site: dict[str, Any]) -> Any:
    """A site handler that records what reached it and echoes it."""
    def handle(payload: bytes, state: dict[str, bytes]) -> bytes:
        CALLS.append(payload)
        return payload
    return handle


ECHO = f"{__name__}:echo_handler"


def test_the_worker_answers_a_hold_empty_capped_and_without_audit(tmp_path: Path) -> None:
    site_dir = tmp_path / "site-a"
    init_site(site_dir, "site-a")
    entries = len(audit_log(site_dir).entries())
    CALLS.clear()
    worker = SiteWorker("127.0.0.1:1", site_config(site_dir, "site-a"), ECHO, frozenset(),
                        hold_cap=0.5)  # nothing connects until serve()
    waited: list[float] = []

    class Stopping:  # stands in for the worker's shutdown event (no real sleep)
        def wait(self, seconds: float) -> bool:
            waited.append(seconds)
            return False

    worker.stopping = Stopping()  # type: ignore[assignment]
    context = _context()
    for asked in (10.0, 0.2):
        hold = _message({"kind": HOLD_KIND, "seconds": asked})
        reply = worker.client_app(message=hold, context=context)
        assert not reply.has_error()
        assert reply.metadata.reply_to_message_id == hold.metadata.message_id
        assert len(reply.content) == 0  # nothing at all comes back
    assert waited == [0.5, 0.2]  # the site's cap, then the hub's shorter hold
    assert worker.held == 2
    assert CALLS == [] and len(context.state.config_records) == 0
    # an exchange message still reaches the site's handler
    reply = worker.client_app(message=_message({"kind": "exchange", "payload": b"x"}),
                              context=context)
    assert reply.content.config_records[RECORD]["payload"] == b"x" and CALLS == [b"x"]
    assert len(audit_log(site_dir).entries()) == entries  # holds are not requests
    assert SiteWorker.__init__.__defaults__ is not None
    assert HOLD_CAP_SECONDS in SiteWorker.__init__.__defaults__  # the worker's default cap


def test_a_malformed_hold_is_refused_and_a_negative_cap_is_invalid() -> None:
    app = make_client_app(site={"site_id": "site-a"}, hold_cap=1.0, wait=lambda s: None)
    with pytest.raises(ProtocolError, match="'seconds'"):
        app(message=_message({"kind": HOLD_KIND, "seconds": "forever"}), context=_context())
    with pytest.raises(InvalidInput, match="hold cap"):
        make_client_app(site={"site_id": "site-a"}, hold_cap=-1.0)


# ------------------------------------------------------------------------------------- hub


class FifoGrid(Grid):  # type: ignore[misc]
    """Nodes that answer what was pushed to them in order, one thing at a time, as a Flower
    SuperNode does; each node runs hemafed's ClientApp for its site. A hold at the head of a
    node's queue is answered once something is queued behind it, or after ``patience`` pulls
    (the hub's next message came later than the hold)."""

    def __init__(self, sites: list[dict[str, Any]], patience: int = 3,
                 handler_factory: str | None = None) -> None:
        self.held: list[tuple[int, float]] = []
        self.nodes = {1000 + i: (make_client_app(site=s, hold_cap=2.0,
                                                 handler_factory=handler_factory,
                                                 wait=lambda sec, n=1000 + i:
                                                 self.held.append((n, sec))),
                                 Context(run_id=1, node_id=1000 + i, node_config={},
                                         state=RecordDict(), run_config={}))
                      for i, s in enumerate(sites)}
        self.queues: dict[int, list[Message]] = {n: [] for n in self.nodes}
        self.pushed: dict[int, list[str]] = {n: [] for n in self.nodes}  # kinds, in order
        self.replies: dict[str, Message] = {}
        self.waits: dict[str, int] = {}
        self.patience = patience

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        return None

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid4().hex  # what the SuperLink does
            node = msg.metadata.dst_node_id
            self.queues[node].append(msg)
            self.pushed[node].append(str(msg.content.config_records[RECORD]["kind"]))
            ids.append(msg.metadata.message_id)
        return ids

    def _advance(self) -> None:
        for node, queue in self.queues.items():
            app, context = self.nodes[node]
            while queue:
                head = queue[0]
                if head.content.config_records[RECORD]["kind"] == HOLD_KIND:
                    waited = self.waits.get(head.metadata.message_id, 0)
                    if len(queue) == 1 and waited < self.patience:
                        self.waits[head.metadata.message_id] = waited + 1
                        break
                queue.pop(0)
                try:
                    reply = app(head, context)
                except Exception as exc:  # a SuperNode returns an error reply
                    reply = Message(Error(code=0, reason=str(exc)), reply_to=head)
                self.replies[head.metadata.message_id] = reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._advance()
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def test_every_message_is_followed_by_a_hold_and_hold_replies_stay_at_the_hub() -> None:
    grid = FifoGrid([{"site_id": "a"}, {"site_id": "b"}], patience=1, handler_factory=ECHO)
    keep_warm = KeepWarm(0.8)
    messages = [_message({"kind": "exchange", "payload": b""}, node=1000)]
    holds = keep_warm._holds([1000], "hold-0", messages)
    # after its message in the SQLite linkstate's order too (created_at, then message id)
    assert holds[0].metadata.created_at > messages[0].metadata.created_at
    assert holds[0].metadata.ttl == keep_warm.ttl
    assert holds[0].content.config_records[RECORD]["seconds"] == 0.8

    exchange = GridExchange(grid, {"a": 1000, "b": 1001}, timeout=5.0, keep_warm=keep_warm)
    for r in range(3):
        # the hub gets exactly the sites' replies, never a hold's
        assert exchange({"a": b"a%d" % r, "b": b"b%d" % r}) == {"a": b"a%d" % r,
                                                                  "b": b"b%d" % r}
    assert grid.pushed[1000] == ["exchange", HOLD_KIND] * 3
    assert keep_warm.sent == 6
    exchange.drain(timeout=0)  # one last pull, no wait
    # the nodes answered their holds in order; every reply that came was collected
    assert keep_warm.collected == 6 - len(keep_warm.pending)
    assert keep_warm.collected >= 4 and not grid.replies


def test_a_site_whose_hold_ends_while_another_is_awaited_gets_one_spare() -> None:
    grid = FifoGrid([{"site_id": "a"}, {"site_id": "b"}], patience=1000)
    keep_warm = KeepWarm(0.8)
    keep_warm.lead = keep_warm.seconds  # "about to end" at once: no clock in this test
    nodes = [1000, 1001]
    ids = keep_warm.push(grid, [_message({"kind": "hello"}, node=n) for n in nodes], "hold")
    # only node 1000 has answered: it holds, node 1001 is still on its hello
    grid.queues[1001].insert(0, grid.queues[1001].pop(0))
    grid._advance()
    got = keep_warm.collect([grid.replies.pop(ids[0])])
    assert [r.metadata.reply_to_message_id for r in got] == [ids[0]]
    assert list(keep_warm.due) == [1000]
    keep_warm.rearm(grid, "hold")
    keep_warm.rearm(grid, "hold")  # one spare, not one per poll
    assert grid.pushed[1000] == ["hello", HOLD_KIND, HOLD_KIND]
    assert grid.pushed[1001] == ["hello", HOLD_KIND]
    # the reply to its first hold: it now holds the spare (its last), so the next is due
    first_hold = keep_warm.queue[1000][0]
    grid.queues[1000].append(_message({"kind": "exchange"}, node=1000))  # lets the hold go
    grid._advance()
    keep_warm.collect([grid.replies.pop(first_hold)])
    assert keep_warm.queue[1000] == [keep_warm.queue[1000][0]] and list(keep_warm.due) == [1000]
    keep_warm.stop()
    assert keep_warm.due == {}
    keep_warm.rearm(grid, "hold")  # the exchange is complete: no more spares
    assert grid.pushed[1000].count(HOLD_KIND) == 2


def test_a_failed_hold_does_not_rearm_its_node() -> None:
    grid = FifoGrid([{"site_id": "a"}], patience=1000)
    keep_warm = KeepWarm(0.8)
    keep_warm.lead = keep_warm.seconds
    keep_warm.push(grid, [_message({"kind": "hello"}, node=1000)], "hold")
    hold_id = keep_warm.queue[1000][1]
    hold = grid.queues[1000][1]
    expired = Message(Error(code=0, reason="expired"), reply_to=hold)
    assert keep_warm.collect([expired]) == [] and keep_warm.due == {}
    assert hold_id not in keep_warm.pending


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path_factory.mktemp("keepwarm"),
                      split_sites(generate("MDS", 240, 3), 3, 3), spec,
                      policy_overrides={"refuse_differencing": False})
    # a site's first study also audits each request's first use of the site's session keys:
    # run one before the comparisons, so that each compared run starts from the same state
    with pytest.MonkeyPatch.context() as monkeypatch:
        _set_hub_task(monkeypatch)
        _study(fed, spec, 0.0, 0)
    return fed, spec


def _study(fed: Any, spec: StudySpec, hold: float, patience: int) -> tuple[Any, FifoGrid,
                                                                           dict[str, list[Any]]]:
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    before = {s: len(audit_log(d).entries()) for s, d in fed.site_dirs.items()}
    grid = FifoGrid(fed.site_configs(), patience=patience)
    result, _ = run_hub(grid, study_hub_main, config, expected=3, timeout=5.0,
                        connect_timeout=5.0, hold=hold)
    added = {s: audit_log(d).entries()[before[s]:] for s, d in fed.site_dirs.items()}
    return result, grid, added


def _summary(result: Any) -> Any:
    return result["analyses"][0]["tables"]["summary"]["data"]


@pytest.mark.parametrize("patience", [0, 2])
def test_a_study_gives_the_same_numbers_and_audit_entries_with_holds(federation: Any,
                                                                     patience: int) -> None:
    """``patience`` 0: every hold ends before the hub's next message (the site would sleep);
    2: the next message comes while the site holds (the case holds are for)."""
    fed, spec = federation
    plain, plain_grid, plain_audit = _study(fed, spec, 0.0, patience)
    warm, warm_grid, warm_audit = _study(fed, spec, 0.8, patience)
    assert warm["analyses"][0]["status"] == "ok"
    assert _summary(warm) == _summary(plain)  # exactly: the same messages reached the sites
    assert all(HOLD_KIND not in kinds for kinds in plain_grid.pushed.values())
    for node, kinds in warm_grid.pushed.items():
        assert kinds.count(HOLD_KIND) >= kinds.count("exchange") + 1, node  # + the hello's
        assert {sec for n, sec in warm_grid.held if n == node} == {0.8}
    for sid in fed.site_dirs:
        assert ([(e["query"], e["decision"]) for e in warm_audit[sid]]
                == [(e["query"], e["decision"]) for e in plain_audit[sid]]), sid
        assert warm_audit[sid], sid  # the study's requests were audited
