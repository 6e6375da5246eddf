"""The metadata proxy: one haproxy per ``qrouter-``/``qdhcp-`` namespace, as in Neutron.

An instance's ``GET http://169.254.169.254/<path>`` reaches a proxy in its router's namespace
(or its network's DHCP namespace when no router serves it). The proxy forwards it as
``GET /metadata/<path>`` to the server over the agents' unix socket, with ``X-Forwarded-For``
set to the instance's address and ``X-Neutron-Router-ID`` or ``X-Neutron-Network-ID`` set to
the namespace's; copies of those headers and of ``X-Instance-ID*`` / ``X-Tenant-ID`` sent by the
instance are deleted (``haproxy.py``). The server resolves the instance (``stacklet.metadata``).

The API, for the roles (one object per agent)::

    from stacklet.agent.metadata import MetadataProxy, NETWORK_BIND, ROUTER_BIND

    proxy = MetadataProxy(conf.data_dir / "metadata-proxy",     # <id>/{haproxy.cfg,pid,netns}
                          conf.data_dir / "run" / "agent.sock", # the server's agent socket
                          user="haproxy", group="haproxy",      # chrooted to <id>/root/
                          rate_limit=RateLimit(...),            # per instance; None: unlimited
                          relay=MetadataRelay(...))             # shared by an agent's proxies

    # L3 role, per router (the role adds the nat PREROUTING rule
    #   -d 169.254.169.254/32 -i qr-+ -p tcp --dport 80 -j REDIRECT --to-ports 9697):
    proxy.ensure(f"qrouter-{router_id}", router_id=router_id, bind=ROUTER_BIND)

    # DHCP role, per network with isolated metadata (the role first adds 169.254.169.254/32
    # to the namespace's ns- interface; the bind fails without it):
    proxy.ensure(f"qdhcp-{network_id}", network_id=network_id, bind=NETWORK_BIND)

    proxy.stop(router_id or network_id or netns)  # SIGTERM/SIGKILL by PID; False if none
    proxy.running()   # set of router/network ids with a proxy here, for removing stale ones
    proxy.pid(id)     # live PID or None

``ensure`` is idempotent and cheap when nothing changed (reads three small files and /proc):
call it on every sync. It adopts a running proxy by its pid file, so proxies survive agent
restarts; it restarts one that died, or that runs in a namespace deleted and created again,
or whose configuration changed. It raises ``MetadataProxyError`` (namespace missing, bind
failed) and ``ProxyConfigError`` (bad id or bind). Stop the proxy before deleting its
namespace (``linux.netns_delete`` also ends it, by PID, and ``ensure`` restarts it later).

The socket must be a unix socket on this node: over it the server accepts requests without
the signed ``X-Instance-ID`` that it requires over TCP. haproxy never sees it: chrooted and
unprivileged, it reaches only its relay socket, through which the agent passes on metadata
requests and nothing else (``relay.py``).
"""

from stacklet.agent.metadata.haproxy import (
    METADATA_IP,
    NETWORK_BIND,
    ROUTER_BIND,
    ProxyConfigError,
    RateLimit,
)
from stacklet.agent.metadata.proxy import MetadataProxy, MetadataProxyError
from stacklet.agent.metadata.relay import MetadataRelay

__all__ = [
    "METADATA_IP",
    "NETWORK_BIND",
    "ROUTER_BIND",
    "MetadataProxy",
    "MetadataProxyError",
    "MetadataRelay",
    "ProxyConfigError",
    "RateLimit",
]
