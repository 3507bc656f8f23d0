"""Record-level outcomes: what happens to each record, not only to each file.

- ``rules.py``: an ingestion's record rules (validation, key, delta, deletions), checked where they enter;
- ``keys.py``: a record's key (a top-level field or a dotted path) and its stored form;
- ``validate.py``: JSON Schema (Draft 2020-12, formats checked), required fields, the key;
- ``pipeline.py``: the spool pass of an ingestion with rules: validate, look versions up on disk, skip
  what is unchanged, cut what is sent, and append the scope's tombstones;
- ``meta.py``: what a chunk row keeps of its records (file positions, keys, version hashes), read back
  when its ACK commits;
- ``reject_file.py``: the refused records, re-read from the source and written in its own format.
"""
