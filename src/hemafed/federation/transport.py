"""The contract every transport implements: opaque byte messages between a hub and its sites.

A *transport* carries one interactive, multi-round protocol between a hub and N sites. It never
looks inside the messages; the protocol (secure aggregation, queries, ...) lives above it.

Site side
    A :data:`SiteHandler` gets the hub's message and a per-site state mapping and returns its reply.
    The state mapping persists across the messages of one run for that site (in Flower it lives in
    ``context.state``), so the handler itself may be rebuilt for every message. Handlers are built by
    a *site handler factory*, named by an importable ``"module:function"`` string, called with the
    site's configuration: a dict with at least ``site_dir`` (str) and ``site_id`` (str).

Hub side
    The hub protocol is a function ``hub_main(exchange, site_ids, config)`` (also named by a
    ``"module:function"`` string) where ``exchange(messages)`` sends one message to each named site
    and returns the replies of the sites that answered within the transport's timeout; a site that
    is missing from the returned dict has *dropped* (did not answer, answered too late, or failed).
    ``hub_main`` returns ``bytes`` or a JSON-able value; every transport hands back the value after
    the same JSON round trip (:func:`normalise_result`), so all transports return identical results.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, cast

from hemafed.errors import InvalidInput

SiteHandler = Callable[[bytes, MutableMapping[str, bytes]], bytes]
"""Site side: ``handler(message, state) -> reply``; ``state`` persists across one run's messages."""

SiteHandlerFactory = Callable[[dict[str, Any]], SiteHandler]
"""``factory(site_config) -> SiteHandler``; ``site_config`` has at least ``site_dir``, ``site_id``."""

Exchange = Callable[[dict[str, bytes]], dict[str, bytes]]
"""Hub side: send one message per site id, get the replies of the sites that answered in time."""

HubMain = Callable[[Exchange, list[str], dict[str, Any]], Any]
"""The hub protocol: ``hub_main(exchange, site_ids, config) -> bytes | JSON-able``."""

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BYTES_TAG = "__hemafed_bytes_b64__"


def load_object(spec: str, *, what: str = "object") -> Any:
    """Import ``"package.module:name"`` and return ``name``; errors say what to fix."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise InvalidInput(f"{what} {spec!r} must be an importable 'package.module:function' string")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidInput(f"{what} {spec!r}: cannot import module {module_name!r} ({err}); "
                           "is it installed in this environment?") from err
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise InvalidInput(f"{what} {spec!r}: module {module_name!r} has no {attr!r}") from err
    if not callable(obj):
        raise InvalidInput(f"{what} {spec!r} is not callable")
    return obj


def load_handler_factory(spec: str) -> SiteHandlerFactory:
    """Load the site handler factory named by ``spec``."""
    return cast(SiteHandlerFactory, load_object(spec, what="site handler factory"))


def load_hub_main(spec: str) -> HubMain:
    """Load the hub protocol function named by ``spec``."""
    return cast(HubMain, load_object(spec, what="hub_main"))


def check_site_id(site_id: str) -> str:
    """Return ``site_id`` if it is a usable site id (letters, digits, ``_.-``; at most 64)."""
    if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
        raise InvalidInput(f"site id {site_id!r} must be 1-64 characters of letters, digits, '_', "
                           "'.' or '-', starting with a letter or digit")
    return site_id


def site_config(site_dir: str | Path, site_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """The configuration a handler factory gets: ``site_dir``, ``site_id`` (default: dir name)."""
    path = Path(site_dir)
    sid = site_id if site_id is not None else path.name
    return {"site_dir": str(path), "site_id": check_site_id(sid), **extra}


def check_sites(sites: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate a list of site configurations (each with ``site_dir`` and unique ``site_id``)."""
    if not sites:
        raise InvalidInput("sites: at least one site configuration is needed")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, site in enumerate(sites):
        if not isinstance(site.get("site_dir"), str):
            raise InvalidInput(f"sites[{i}]: 'site_dir' must be a string, got {site.get('site_dir')!r}")
        sid = check_site_id(site.get("site_id", ""))
        if sid in seen:
            raise InvalidInput(f"sites[{i}]: site id {sid!r} appears twice; site ids must be unique")
        seen.add(sid)
        checked.append(dict(site))
    try:
        json.dumps(checked)
    except TypeError as err:
        raise InvalidInput(f"sites: site configurations must be JSON-able ({err})") from err
    return checked


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES_TAG}:
            return base64.b64decode(value[_BYTES_TAG])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_result(result: Any) -> str:
    """Serialise a hub result (bytes or JSON-able, bytes may be nested) to a JSON string."""
    try:
        return json.dumps(_encode(result), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"hub_main returned a value that is neither bytes nor JSON-able: {err}; "
                           "return bytes, or dicts/lists of numbers, strings and bytes") from err


def decode_result(text: str) -> Any:
    """Inverse of :func:`encode_result` (tuples come back as lists)."""
    return _decode(json.loads(text))


def normalise_result(result: Any) -> Any:
    """What every transport returns for ``result``: the value after the JSON round trip."""
    return decode_result(encode_result(result))
