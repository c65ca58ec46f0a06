"""Demo assets for ``poolwatch demo``: ``host.xml``, a libvirt test-driver host, and
``demo.toml``, the rules the demo runs with when it is given no configuration file."""

from pathlib import Path

DEMO_HOST = Path(__file__).parent / "host.xml"
DEMO_CONFIG = Path(__file__).parent / "demo.toml"
