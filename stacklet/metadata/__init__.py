"""The metadata service for instances: Neutron's metadata agent and Nova's metadata API in one.

An instance asks ``http://169.254.169.254/<path>``. A proxy in its router's ``qrouter-``
namespace (or its network's ``qdhcp-`` namespace) forwards the request to the server as
``GET /metadata/<path>``, adding who asked: ``X-Forwarded-For`` (the instance's address) and
``X-Neutron-Router-ID`` or ``X-Neutron-Network-ID``. The server resolves (networks, address) →
port → instance itself, so the proxy needs no database and no secret.

A caller may also name the instance as Neutron's metadata agent does for Nova:
``X-Instance-ID`` with ``X-Instance-ID-Signature`` = HMAC-SHA256(shared secret, instance id).
A given signature is always verified (403 when wrong), and a signed id must agree with what
the network and address resolve to, so an instance can never read another's data.

    signing.py   the shared secret (configured, or generated once into the data dir) and HMAC
    formats.py   pure rendering of Nova's formats: OpenStack JSON documents, the EC2 tree
    service.py   the database side: resolve the requester, gather ports, subnets, floating IPs
"""
