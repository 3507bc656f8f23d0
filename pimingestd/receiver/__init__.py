"""The reference PIM-Core receiver: PIM-Core's side of protocol v1, runnable.

For demos, for integrators to read beside docs/protocol.md, and for the tests.
It verifies Content-Digest, the signature, order and completeness; applies each
chunk exactly once (its state, dedup included, lives in SQLite and survives its
restarts); stores the records it applied; calls back asynchronously; and can
inject faults (see faults.py).
"""

from .app import create_app

__all__ = ["create_app"]
