"""Demo assets: ``host.xml``, a libvirt test-driver host for ``poolwatch demo``."""
