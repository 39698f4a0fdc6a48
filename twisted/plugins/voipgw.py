"""twistd dropin for voipgw: ``twistd -n voipgw --config FILE``.

Lazy on purpose: ``ServiceMaker`` imports ``gateway.tap`` only when used, so
``twistd --help`` stays fast and a broken install cannot break other plugins.
"""

from twisted.application.service import ServiceMaker

serviceMaker = ServiceMaker(
    "voipgw",
    "gateway.tap",
    "VoIP push gateway: SIP in, local push and APNs PushKit out",
    "voipgw",
)
