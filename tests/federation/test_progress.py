"""Progress of a deployed run: the hub's ``GridExchange`` logs one INFO line per exchange and
appends one progress record per exchange, and ``hemafed hub run``'s view (``_ProgressView``)
shows each: the exchange number, how many sites answered, which dropped, and the elapsed time.

The study runs through the real hub code (``run_hub``: site discovery, ``GridExchange``,
``study_hub_main``) and the real hemafed ClientApp at every site, over a loopback Flower
``Grid`` that hands each message to the site's ClientApp in this process instead of through a
SuperLink (so the test takes seconds; the deployed path is tests/federation/test_operator_guide).
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from rich.console import Console

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.federation.cli import _ProgressView
from hemafed.federation.flower.apps import make_client_app, run_hub
from hemafed.federation.flower.deployment import progress_events
from hemafed.study.hub import study_hub_main
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "progress", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb"}]}
LINE = re.compile(r"exchange (\d+): (\d+) site\(s\) answered(?:; dropped (\S+))? "
                  r"\((\d+\.\d\d) s; (\d+) s elapsed\)")


class LoopbackGrid(Grid):  # type: ignore[misc]
    """A Flower ``Grid`` whose nodes are hemafed ClientApps in this process.

    ``drop(exchange, site_id)`` true: that node does not answer that exchange (the message is
    lost, as when a SuperNode is gone); hello messages are always answered.
    """

    def __init__(self, sites: list[dict[str, Any]],
                 drop: Callable[[int, str], bool] | None = None) -> None:
        self.nodes = {1000 + i: (s["site_id"], make_client_app(site=s),
                                 Context(run_id=1, node_id=1000 + i, node_config={},
                                         state=RecordDict(), run_config={}))
                      for i, s in enumerate(sites)}
        self.drop = drop
        self.replies: dict[str, Message] = {}

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
            site_id, app, context = self.nodes[msg.metadata.dst_node_id]
            group = msg.metadata.group_id
            if (self.drop is not None and group.startswith("exchange-")
                    and self.drop(int(group.split("-")[1]), site_id)):
                ids.append(msg.metadata.message_id)
                continue
            try:
                reply = app(msg, context)
            except Exception as exc:  # a SuperNode returns an error reply
                reply = Message(Error(code=0, reason=str(exc)), reply_to=msg)
            self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


@pytest.fixture(autouse=True)
def hub_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity Flower's ServerApp process gives the hub task (messages carry it)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in {"_task_id": 1, "_run_id": 1, "_node_id": SUPERLINK_NODE_ID}.items():
        monkeypatch.setattr(TaskIdentity, name, value)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path_factory.mktemp("progress"),
                      split_sites(generate("MDS", 240, 3), 4, 3), spec,
                      policy_overrides={"refuse_differencing": False})
    return fed, spec


def _run(fed: Any, spec: StudySpec, progress: Path,
         drop: Callable[[int, str], bool] | None = None) -> Any:
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    return run_hub(LoopbackGrid(fed.site_configs(), drop), study_hub_main, config, expected=4,
                   timeout=0.5, connect_timeout=5.0, progress=progress)


def _shown(events: list[dict[str, Any]]) -> tuple[list[str], str]:
    """What the view shows for each event (its status line), and what it printed."""
    view = _ProgressView(sites=4)
    view.console = Console(file=io.StringIO(), record=True, width=200)
    view.status = view.console.status("waiting for the sites ...")
    view.started -= 42.0  # as if the run had started 42 s ago
    lines = []
    with view.status:
        for event in events:
            view(event)
            lines.append(str(view.status.status))
    return lines, view.console.export_text()


def test_every_exchange_is_logged_and_shown(sites: Any, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    fed, spec = sites
    progress = tmp_path / "progress.jsonl"
    with caplog.at_level(logging.INFO, logger="hemafed.federation.flower.apps"):
        started = time.monotonic()
        result, exchange = _run(fed, spec, progress)
        took = time.monotonic() - started
    assert result["analyses"][0]["status"] == "ok", result["analyses"][0].get("error")
    ids = sorted(fed.site_dirs)
    n = exchange.round_trips
    assert n >= 3  # the session set-up, the Cox time grid, Newton rounds
    # one INFO line per exchange, in order
    info = [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and " site(s) answered in " in r.getMessage()]
    assert [int(m.split(":")[0].split()[1]) for m in info] == list(range(n))
    assert all(m.startswith(f"exchange {i}: 4 site(s) answered in ") for i, m in enumerate(info))
    # one progress record per exchange
    events = progress_events(progress)  # what `hub run` reads while the run goes on
    assert [e["exchange"] for e in events] == list(range(n))
    assert all(e["answered"] == ids and e["dropped"] == [] for e in events)
    assert [e["seconds"] for e in events] == exchange.seconds
    # the view: exchange k (counted from 1), 4 sites answered, the exchange's and elapsed time
    lines, printed = _shown(events)
    for k, (line, event) in enumerate(zip(lines, events, strict=True), start=1):
        m = LINE.fullmatch(line)
        assert m, line
        assert int(m[1]) == k and int(m[2]) == 4 and m[3] is None
        assert m[4] == f"{event['seconds']:.2f}" and 42 <= int(m[5]) <= 42 + took + 1
    assert "dropped" not in printed  # nothing worth a printed line


def test_a_dropped_site_is_logged_and_printed(sites: Any, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    fed, spec = sites
    gone = sorted(fed.site_dirs)[2]
    progress = tmp_path / "progress.jsonl"
    with caplog.at_level(logging.INFO, logger="hemafed.federation.flower.apps"):
        result, exchange = _run(fed, spec, progress, lambda i, s: s == gone and i >= 3)
    cox = result["analyses"][0]
    assert cox["status"] == "ok", cox.get("error")
    assert cox["provenance"]["sites covered"] == [s for s in sorted(fed.site_dirs) if s != gone]
    events = progress_events(progress)  # what `hub run` reads while the run goes on
    assert len(events) == exchange.round_trips
    lost = [e for e in events if e["dropped"]]
    assert lost and all(e["dropped"] == [gone] and len(e["answered"]) == 3 for e in lost)
    assert lost[0]["exchange"] == 3
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"exchange 3: 3 site(s) answered in {events[3]['seconds']:.2f} s; dropped " \
           f"['{gone}']" in info
    lines, printed = _shown(events)
    assert LINE.fullmatch(lines[3]) and f"exchange 4: 3 site(s) answered; dropped {gone} " \
        in lines[3]
    # a dropout is printed above the status line, once per exchange that lost a site
    assert printed.count(f"dropped {gone}") == len(lost)


def test_a_progress_line_still_being_written_waits_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    assert progress_events(path) == []  # the run has not made an exchange yet
    first = {"exchange": 0, "answered": ["site01"], "dropped": [], "seconds": 0.5}
    path.write_text(json.dumps(first) + "\n" + '{"exchange": 1, "answered": ["si')
    assert progress_events(path) == [first]
