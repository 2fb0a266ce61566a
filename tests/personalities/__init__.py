"""Registry personalities: small aiohttp apps on 127.0.0.1 that put a public registry's documented behaviour
in front of a real local distribution registry (manifests and blobs stay real). Each cites its sources."""
