"""In-process transport: the hub and every site handler run in this process, for fast unit tests.

It follows the same contract as the Flower transports (:mod:`hemafed.federation.transport`):
per-site state persists across messages, a site whose handler raises is *dropped* for that
exchange (its state changes are discarded, as in Flower where a failed ClientApp returns an error
reply), and the result goes through the same JSON round trip. A ``drop`` hook lets tests simulate
sites that do not answer.

>>> def factory(cfg):
...     return lambda msg, state: cfg["site_id"].encode() + msg
>>> def hub(exchange, site_ids, config):
...     return sorted(exchange({s: b"!" for s in site_ids}).values())
>>> run_in_process(hub, factory, [{"site_dir": "/a", "site_id": "a"}], {})
[b'a!']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hemafed.errors import ProtocolError
from hemafed.federation.transport import (
    HubMain,
    SiteHandler,
    SiteHandlerFactory,
    check_sites,
    load_handler_factory,
    load_hub_main,
    normalise_result,
)

log = logging.getLogger(__name__)

DropHook = Callable[[int, str], bool]
"""``drop(exchange_index, site_id) -> True`` to make that site miss that exchange (0-based)."""


class InProcessSites:
    """Site handlers in this process behind one ``exchange`` callable (the transport contract).

    :func:`run_in_process` hands :meth:`exchange` to a ``hub_main``; :func:`hemafed.connect`
    keeps it open for a notebook. Per-site state persists across messages; a site whose handler
    raises is dropped for that exchange and its state changes are discarded.
    """

    def __init__(self, handler_factory: SiteHandlerFactory | str,
                 sites: Sequence[Mapping[str, Any]], *, drop: DropHook | None = None,
                 raise_errors: bool = False) -> None:
        factory = (load_handler_factory(handler_factory) if isinstance(handler_factory, str)
                   else handler_factory)
        checked = check_sites(sites)
        self.handlers: dict[str, SiteHandler] = {s["site_id"]: factory(dict(s)) for s in checked}
        self._states: dict[str, dict[str, bytes]] = {sid: {} for sid in self.handlers}
        self._drop = drop
        self._raise = raise_errors
        self.count = 0
        """Exchanges so far (one round trip each)."""

    @property
    def site_ids(self) -> list[str]:
        return sorted(self.handlers)

    def exchange(self, messages: dict[str, bytes]) -> dict[str, bytes]:
        index, self.count = self.count, self.count + 1
        unknown = sorted(set(messages) - set(self.handlers))
        if unknown:
            raise ProtocolError(f"exchange {index}: no site with id(s) {unknown}; "
                                f"known sites are {sorted(self.handlers)}")
        replies: dict[str, bytes] = {}
        for sid, message in messages.items():
            if not isinstance(message, bytes):
                raise ProtocolError(f"exchange {index}: message for site {sid!r} must be bytes, "
                                    f"got {type(message).__name__}")
            if self._drop is not None and self._drop(index, sid):
                log.info("exchange %d: site %s dropped by the drop hook", index, sid)
                continue
            work = dict(self._states[sid])
            try:
                reply = self.handlers[sid](message, work)
            except Exception:
                if self._raise:
                    raise
                log.warning("exchange %d: site %s failed; counted as dropped", index, sid,
                            exc_info=True)
                continue
            if not isinstance(reply, bytes):
                raise ProtocolError(f"exchange {index}: site {sid!r} replied with "
                                    f"{type(reply).__name__}, expected bytes")
            bad = [k for k, v in work.items() if not isinstance(k, str) or not isinstance(v, bytes)]
            if bad:
                raise ProtocolError(f"exchange {index}: site {sid!r} left non-bytes state under "
                                    f"key(s) {bad}; site state must map str to bytes")
            self._states[sid] = work
            replies[sid] = reply
        return replies


def run_in_process(hub_main: HubMain | str, handler_factory: SiteHandlerFactory | str,
                   sites: Sequence[Mapping[str, Any]], config: Mapping[str, Any], *,
                   drop: DropHook | None = None, raise_errors: bool = False) -> Any:
    """Run ``hub_main`` against in-process sites and return its (normalised) result.

    ``hub_main`` and ``handler_factory`` are callables or ``"module:function"`` strings.
    ``raise_errors=True`` re-raises a handler's exception instead of treating the site as dropped.
    """
    hub = load_hub_main(hub_main) if isinstance(hub_main, str) else hub_main
    local = InProcessSites(handler_factory, sites, drop=drop, raise_errors=raise_errors)
    return normalise_result(hub(local.exchange, local.site_ids, dict(config)))
