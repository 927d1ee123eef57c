"""The site's view of a hub request: :class:`~hemafed.federation.request.SiteRequest`.

The request is the wire format both ends share, so it lives in the federation layer (the hub
runtime builds it; the site parses it); this module keeps the site-side import path.
"""

from hemafed.federation.request import SiteRequest, canonical_json

__all__ = ["SiteRequest", "canonical_json"]
