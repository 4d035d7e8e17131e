"""Whether Confab's HTTP server is open to the network with no API key to guard it.

Listening beyond loopback is legitimate (a container must listen on all its addresses), so this
is a warning, never a refusal; the start-up log, `confab doctor` and the dashboard say it.
"""
from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str | None) -> bool:
    """True when every address `host` names is a loopback one; an empty host (all addresses),
    a LAN address or a name that does not resolve is not."""
    host = (host or "").strip().strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                               for info in infos)


def open_to_network(settings) -> str | None:
    """The warning to give when Confab listens beyond this machine with no API key, else None."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    return (f"Confab listens on {settings.host or 'every address'}:{settings.port} with no API key "
            "(CONFAB_API_KEYS is empty): anyone who can reach this address can use every model, "
            "read everyone's jobs and usage on the dashboard, and cancel them. Set CONFAB_API_KEYS, "
            "or CONFAB_HOST=127.0.0.1 to listen on this machine only.")
