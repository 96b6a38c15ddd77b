"""Multi-process end-to-end fault runs of the scaled-out topology (haproxy, api, gateway, worker)."""
