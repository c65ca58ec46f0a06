"""The libvirt adapter: the only package that imports ``libvirt``.

It hides libvirt's event loop, the executor that runs blocking calls, timeouts and reconnects
behind ``poolwatch.source.StorageSource``.
"""
