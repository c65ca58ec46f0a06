"""The actuator: runs the pure policies over the inventory and carries out what they decide.

``actuator`` is the loop, ``evaluation`` asks the policies about one pool, ``actions`` carries
out their decisions (libvirt calls, hooks), ``episodes`` keeps open alarm episodes across a
restart, ``context`` holds the per-pool state they share.
"""

from poolwatch.actuator.actuator import Actuator, PolicyRules

__all__ = ["Actuator", "PolicyRules"]
