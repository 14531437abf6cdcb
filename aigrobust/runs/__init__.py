"""Run folders: the document (run.json), records on disk, the lock, reuse of finished work, and the
runs that write them (``attack``, ``universal``)."""
