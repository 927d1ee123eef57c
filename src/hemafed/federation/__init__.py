"""Federation: the interface analyses call, the site query registry and the transports."""
