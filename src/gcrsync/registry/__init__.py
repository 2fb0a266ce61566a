"""The registry layer: the transport stack (gcrsync.registry.transport), the client verbs and discovery.

aiohttp is imported here, before any module of the layer imports it, the way gcrsync.registry.tls explains.
"""

from gcrsync.registry.tls import import_aiohttp

import_aiohttp()
