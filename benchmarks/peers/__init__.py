"""Peer implementations measured by the benchmark suite.

Each module exposes ``SCENARIOS``: a mapping from scenario name to a pair
``(server, client)``.  ``server(params, task_status)`` serves connections on a fresh
loopback port (reported through ``task_status``) until cancelled; ``client(port,
params)`` runs one measured repetition and returns the result fields (a dict).
Blocking-socket peers use plain functions instead (see ``blocking.py``).
"""
