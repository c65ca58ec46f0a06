"""The local fast path: figures of pools whose target poolwatch can see, read from the filesystem.

A pool takes it when its connection is to this host's libvirtd, its type is ``dir``, ``fs`` or
``netfs``, and its target is visible here (an ``fs``/``netfs`` target mounted in poolwatch's
mount namespace). Its capacity, allocation and available then come from ``statvfs`` on every
info poll (``space``), its volumes' allocation and physical size from ``stat()`` (``files``,
``volumes``) of the files inotify saw change (``inotify``, ``dirty``; of every file where it
cannot see every write: ``mounts``), new and removed files within a second (``refresher``), and
a slow sweep through libvirt, which also stat()s every file, counts where the two disagree
(``corrections``); where inotify sees every change, that sweep is the only full read. libvirt
stays the truth: nothing here imports it, and what it cannot see falls back to libvirt's own
figures.
"""
