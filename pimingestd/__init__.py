"""pimingestd: exactly-once, resumable, constant-memory ingestion of product files into PIM-Core."""

__version__ = "0.1.0"
