"""Record-level outcomes: what happens to each record, not only to each file.

- ``rules.py``: an ingestion's record rules (validation, key, delta, deletions), checked where they enter;
- ``validate.py``: JSON Schema (Draft 2020-12, formats checked), required fields, the key;
- ``pipeline.py``: the spool pass of an ingestion with rules: validate, look versions up on disk, skip
  what is unchanged, cut what is sent, and append the scope's tombstones;
- ``reject_file.py``: the refused records, re-read from the source and written in its own format.
"""
