"""Lab infrastructure: provider stand-ins, the caller and the speech engines they share.

Runs on the control node, started by `scripts/lab` and the Molecule scenarios; never installed
on a host and never imported by the worker.
"""
