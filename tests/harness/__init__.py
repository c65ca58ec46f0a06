"""The harness every test tier and the benchmarks share: a private real libvirtd
(libvirtd.py), loop-device filesystems (loopdev.py) and the commands behind them (commands.py).
"""
