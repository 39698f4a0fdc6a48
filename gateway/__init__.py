"""voipgw: a VoIP push gateway between a SIP core and iPhones.

Calls arrive over SIP, go to devices over Local Push Connectivity sockets
first and over APNs PushKit pushes as the fallback.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
