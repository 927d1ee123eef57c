"""The site worker: a long-running process that answers a SuperNode's ClientApp tasks itself.

Flower 1.42's default SuperNode (``--isolation subprocess``) starts ``flower-superexec``, which
starts a fresh ``flwr-clientapp`` process for *every* message, installs the hub's Flower App
(FAB) in it and runs whatever ``clientapp`` component that FAB names: the hub chooses the code
that runs at the site, and each message pays a Python start-up and a re-load of the cohort.

``hemafed site serve`` instead starts the SuperNode with ``--isolation process`` and this worker
beside it, as the SuperNode's only executor. The worker polls the SuperNode's local Runtime API
(``AcquireTask``), pulls each ClientApp task's message, context, run and FAB with Flower's own
client functions, and then:

* **refuses** the task unless the FAB's SHA-256 is one the site pinned (by default the hash of
  the hemafed app installed here, :func:`installed_app_sha256`; or the ``trusted_flower_apps``
  list in ``site.yaml``): the FAB's code is never installed, imported or run, the reply is a
  Flower error saying only that the app is not trusted, and the refusal is appended to the
  site's audit log (query ``flower-app``, the run id, FAB id, version and hash);
* otherwise answers it with hemafed's own ClientApp
  (:func:`hemafed.federation.flower.apps.make_client_app`) and the site handler fixed here at
  start-up (``--handler-factory``, default :func:`hemafed.study.site_runtime.site_handler`),
  never one named by the hub's run config. The handler's site runtime (cohort, keys, manifest)
  stays loaded between messages. A hold message (the hub's keep-warm,
  :class:`~hemafed.federation.flower.apps.KeepWarm`) is answered empty after the seconds it
  asks, at most ``--hold-cap`` (default 2 s): it reaches no handler and writes no audit entry.

Only this worker may take the SuperNode's tasks: both are started with the site's
``keys/superexec.secret`` (:func:`hemafed.site.store.superexec_secret`; Flower's
``--superexec-auth-secret-file``) and the SuperNode answers an ``AcquireTask`` not signed with
it by HTTP 401, so another local process cannot pull the hub's messages (and the task token
that opens them) from the Runtime API port.

Run as ``python -m hemafed.federation.flower.site_worker --runtime-api 127.0.0.1:PORT
--site-dir DIR`` (``hemafed site serve`` and :class:`~hemafed.federation.flower.deployment.
Deployment` do it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent / "app"
DEFAULT_SITE_HANDLER = "hemafed.study.site_runtime:site_handler"
HOLD_CAP_SECONDS = 2.0
"""The longest this site holds a hub's hold message (``--hold-cap``), whatever the hub asks."""
REFUSAL_REASON = "the site does not run this Flower app (its hash is not pinned by the site)"
AUTHENTICATED_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})
"""The Runtime API calls Flower 1.42's SuperNode authenticates with the SuperExec secret
(``flwr/supercore/routers/runtime/router.py``: only ``acquire-task``; every later call of a
task carries the token ``AcquireTask`` returned)."""


def ensure_runtime_secret(site_dir: Path) -> Path:
    """The secret file the site's SuperNode and this worker share (made once, mode 0600)."""
    from hemafed.site.store import superexec_secret

    return superexec_secret(site_dir)


@lru_cache(maxsize=1)
def installed_app_sha256() -> str:
    """SHA-256 of the hemafed Flower App as ``flwr run`` builds it from this installation.

    Flower builds FABs deterministically (fixed zip timestamps), so a hub running the same
    hemafed release submits exactly this hash.
    """
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(APP_DIR)).hexdigest()


def pinned_app_hashes(site_dir: Path, extra: Iterable[str] = ()) -> frozenset[str]:
    """The FAB hashes this site runs: ``site.yaml``'s ``trusted_flower_apps`` if set, else the
    installed hemafed app; plus ``extra`` (e.g. ``--app-sha256`` given by the site operator)."""
    import yaml

    from hemafed.errors import InvalidInput

    hashes = {h.lower() for h in extra}
    config = site_dir / "site.yaml"
    listed = None
    if config.is_file():
        doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        listed = doc.get("trusted_flower_apps") if isinstance(doc, dict) else None
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(h, str) and len(h) == 64
                                                   for h in listed):
            raise InvalidInput(f"{config}: key 'trusted_flower_apps' must be a list of SHA-256 "
                               "hex digests (see `hemafed site app-hash`)")
        hashes |= {h.lower() for h in listed}
    else:
        hashes.add(installed_app_sha256())
    return frozenset(hashes)


def site_identity(site_dir: Path, site_id: str | None = None) -> str:
    """The site id: given, else ``site.yaml``'s ``site_id``, else the directory name."""
    from hemafed.federation.transport import check_site_id

    if site_id:
        return check_site_id(site_id)
    if (site_dir / "site.yaml").is_file():
        from hemafed.site.store import site_id_of

        return check_site_id(site_id_of(site_dir))
    return check_site_id(site_dir.name)


def _audit_refusal(site_dir: Path, run: Any, fab_hash: str) -> str:
    """Append the refusal to the site's audit log (if this is a site directory)."""
    if not (site_dir / "site.yaml").is_file():
        log.warning("refused run %s (FAB %s): %s; no site.yaml, so no audit log", run.run_id,
                    fab_hash, REFUSAL_REASON)
        return ""
    from hemafed.site.store import audit_log

    entry = audit_log(site_dir).append(
        requester=f"flower run {run.run_id}", study="", query="flower-app",
        params={"run_id": int(run.run_id), "fab_id": str(run.fab_id),
                "fab_version": str(run.fab_version), "fab_sha256": fab_hash},
        allowed=False, reason=REFUSAL_REASON, request_id=f"flower-run-{run.run_id}")
    log.warning("refused run %s (FAB %s %s, sha256 %s): audit entry %s", run.run_id,
                run.fab_id, run.fab_version, fab_hash, entry["seq"])
    return str(entry["seq"])


LOCAL_PULL_BACKOFF = 0.02
"""First retry (seconds, doubling up to :data:`LOCAL_PULL_BACKOFF_CAP`) when a task's message
objects are not yet in the SuperNode's store. The SuperNode creates the task before it has pulled
the objects from the SuperLink, so a worker polling every 5-100 ms often asks too early; Flower's
own ``pull_task_input`` then waits its default 1 s (``flwr/supercore/constant.py``,
``PULL_INITIAL_BACKOFF``) for what arrives a few milliseconds later."""
LOCAL_PULL_BACKOFF_CAP = 0.2


def pull_task_input(client: Any) -> tuple[Any, Any, Any, Any]:
    """Flower 1.42's ``flwr.supernode.runtime.run_clientapp.pull_task_input`` (task context,
    run, FAB, then the message from the local Runtime API), retrying a message object that is
    not there yet after :data:`LOCAL_PULL_BACKOFF` instead of 1 s."""
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node  # type: ignore[attr-defined]
    from flwr.proto.runtime_pb2 import (  # type: ignore[attr-defined]
        PullAppMessagesRequest,
        PullTaskInputRequest,
    )
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    object_tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        object_tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node,
                                                  context.run_id),
        return_type=Message, initial_backoff=LOCAL_PULL_BACKOFF,
        backoff_cap=LOCAL_PULL_BACKOFF_CAP)
    message.metadata.__dict__["_message_id"] = object_tree.object_id
    return message, context, run, fab


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class SiteWorker:
    """Answers one SuperNode's ClientApp tasks in this process (see the module docstring)."""

    poll_min = 0.005
    poll_max = 0.1

    def __init__(self, runtime_api: str, site: Mapping[str, Any], handler_factory: str,
                 trusted: frozenset[str], supernode_pid: int | None = None,
                 auth_secret: bytes | None = None, hold_cap: float = HOLD_CAP_SECONDS) -> None:
        from hemafed.federation.flower.apps import make_client_app

        self.runtime_api = runtime_api
        self.auth_secret = auth_secret
        self.site = dict(site)
        self.trusted = trusted
        self.stopping = threading.Event()
        self.client_app = make_client_app(site=self.site, handler_factory=handler_factory,
                                          hold_cap=hold_cap, wait=self._hold)
        self.supernode_pid = supernode_pid
        self.answered = 0
        self.refused = 0
        self.held = 0
        self.failed = False

    def _hold(self, seconds: float) -> None:
        """Wait out a hold message; a stopping worker answers it at once."""
        self.held += 1
        self.stopping.wait(seconds)

    def _client(self, token: str | None = None, *, retry: bool = True) -> Any:
        """A Runtime API client: with ``token``, for one task's calls; without, the poller
        (signing ``AcquireTask`` with the SuperExec secret when the site has one).

        The poller retries in :meth:`serve` itself (``retry=False``): Flower's HTTP retry
        invoker answers a 401 by sending SIGINT to its own process."""
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(
            component_name="flwr-clientapp" if token else "SuperExec")]
        if token:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        elif self.auth_secret:
            from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor

            interceptors.append(SuperExecAuthHttpInterceptor(
                master_secret=self.auth_secret, protected_methods=AUTHENTICATED_METHODS))
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_api, insecure=True, root_certificates=None,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker() if retry else None)

    def serve(self) -> None:
        """Poll for tasks until :attr:`stopping` is set."""
        import httpx
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # type: ignore[attr-defined]
        from flwr.supercore.constant import TaskType

        client = self._client(retry=False)
        pause = self.poll_min
        log.info("site worker for %s on %s; trusted app hashes %s", self.site["site_id"],
                 self.runtime_api, sorted(self.trusted))
        try:
            while not self.stopping.is_set():
                try:
                    res = client.AcquireTask(AcquireTaskRequest(
                        supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]))
                except Exception as exc:  # the SuperNode restarting: keep trying
                    if (isinstance(exc, httpx.HTTPStatusError)
                            and exc.response.status_code == httpx.codes.UNAUTHORIZED):
                        log.error("the SuperNode refused this worker's SuperExec auth secret "
                                  "(--superexec-auth-secret-file must name the SuperNode's)")
                        self.failed = True
                        return
                    log.debug("AcquireTask failed: %s", exc)
                    if self.supernode_pid is not None and not _alive(self.supernode_pid):
                        log.info("SuperNode %d is gone; the site worker stops",
                                 self.supernode_pid)
                        return
                    self.stopping.wait(0.5)
                    continue
                if res.HasField("task") and res.token:
                    self.handle(res.token)
                    pause = self.poll_min
                    continue
                self.stopping.wait(pause)
                pause = min(pause * 1.5, self.poll_max)
        finally:
            client.close()

    def handle(self, token: str) -> None:
        """One ClientApp task: pull it, check its app, answer or refuse, push the outcome."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        client = self._client(token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        context = message = None
        status, details = SubStatus.FAILED, "hemafed site worker failed"
        try:
            message, context, run, fab = pull_task_input(client)
            if fab.hash_str.lower() not in self.trusted:
                ref = _audit_refusal(Path(self.site["site_dir"]), run, fab.hash_str)
                self.refused += 1
                reason = f"site {self.site['site_id']!r} refused: {REFUSAL_REASON}"
                if ref:
                    reason += f" (audit entry {ref})"
                push_message(client, Message(Error(code=0, reason=reason), reply_to=message),
                             context)
                details = reason
                return
            reply = self.client_app(message=message, context=context)
            push_message(client, reply, context)
            self.answered += 1
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # never take the worker down with one task
            log.exception("task failed: %s", exc)
            # the hub learns the exception's type only: its text may carry site data
            details = f"site {self.site['site_id']!r}: {type(exc).__name__}"
            if message is not None and context is not None:
                with contextlib.suppress(Exception):
                    push_message(client, Message(Error(code=0, reason=details),
                                                 reply_to=message), context)
        finally:
            push_task_output(client=client, context=context, sub_status=status, details=details)
            heartbeat.stop()
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api", required=True, help="SuperNode Runtime API HOST:PORT")
    parser.add_argument("--site-dir", required=True, type=Path)
    parser.add_argument("--site-id", default="")
    parser.add_argument("--handler-factory", default=DEFAULT_SITE_HANDLER)
    parser.add_argument("--app-sha256", action="append", default=[],
                        help="also trust this FAB hash (repeat)")
    parser.add_argument("--supernode-pid", type=int, default=None,
                        help="stop when this SuperNode process is gone")
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None,
                        help="the secret shared with the SuperNode (same flag there)")
    parser.add_argument("--hold-cap", type=float, default=HOLD_CAP_SECONDS,
                        help="hold a hub's keep-warm message at most this many seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    from hemafed.errors import HemafedError
    from hemafed.federation.transport import load_handler_factory, site_config

    site_dir = args.site_dir.resolve()
    try:
        sid = site_identity(site_dir, args.site_id or None)
        load_handler_factory(args.handler_factory)
        secret_file = args.superexec_auth_secret_file
        worker = SiteWorker(args.runtime_api, site_config(site_dir, sid), args.handler_factory,
                            pinned_app_hashes(site_dir, args.app_sha256), args.supernode_pid,
                            secret_file.read_bytes() if secret_file is not None else None,
                            args.hold_cap)
    except OSError as exc:
        log.error("cannot read the SuperExec auth secret: %s", exc)
        return 2
    except HemafedError as exc:
        log.error("%s", exc)
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    worker.serve()
    log.info("site worker stopped after %.0f s: %d task(s) answered (%d of them holds), "
             "%d refused", time.monotonic() - started, worker.answered, worker.held,
             worker.refused)
    return 2 if worker.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
