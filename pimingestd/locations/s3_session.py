"""The botocore session behind the daemon's S3 filesystem, holding only the data it uses.

botocore parses JSON data files for a session's first client and keeps them as long as the session lives,
which for the daemon is as long as the process. Three things in them cost memory and are never read by it:

- **The whole endpoints table**: every AWS service in every partition (6.7 MiB of Python objects from a
  1.2 MB file). The daemon's S3 client reads the S3 entries alone, and botocore's credential chain may
  make STS, SSO and sign-in clients (an assumed role, a web identity, an SSO or an ``aws login``
  profile), so the table keeps those services. The partitions themselves (regions, DNS suffixes and
  defaults) are kept whole: a service the table does not list falls back to them.
- **Documentation**: the S3 model and its endpoint rules keep every shape, operation and rule, with their
  ``documentation`` strings emptied (botocore reads them for client docstrings only).
- **OrderedDict**: botocore's own file loader parses into OrderedDicts, a third larger than dicts, which
  keep their order as well; botocore builds its own ordered maps from either.

An S3 filesystem after its first call held 12.0 MiB of Python objects (tracemalloc), and holds 2.8 MiB
now. ``DataFiles`` is botocore's file loader interface (``exists``, ``load_file``) for its ``Loader``,
which botocore's own ``create_loader`` builds, so ``AWS_DATA_PATH`` still applies; the data is cut as it
is read, before botocore caches it.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc", "signin"})  # the clients the daemon or its credentials make
_SUFFIXES = ((".json", open), (".json.gz", gzip.open))  # botocore's own, in its order


class DataFiles:
    """botocore's data files, read into plain dicts; the endpoints table cut to ``SERVICES``, and the
    documentation emptied."""

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + suffix) for suffix, _ in _SUFFIXES)

    def load_file(self, file_path: str) -> Any:
        for suffix, opener in _SUFFIXES:
            if os.path.isfile(file_path + suffix):
                with opener(file_path + suffix, "rb") as f:
                    data = json.loads(f.read().decode("utf-8"))
                if os.path.basename(file_path) == "endpoints" and isinstance(data, dict):
                    trim(data)
                else:
                    undocument(data)
                return data
        return None


def trim(table: dict[str, Any]) -> None:
    """Cut each partition's services to ``SERVICES``, in place."""
    for partition in table.get("partitions", ()):
        services = partition.get("services") if isinstance(partition, dict) else None
        if isinstance(services, dict):
            for name in [n for n in services if n not in SERVICES]:
                del services[name]


def undocument(node: Any) -> None:
    """Empty every ``documentation`` string in a model, in place (the key stays: botocore reads it)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("documentation"), str):
                item["documentation"] = ""
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def session() -> Any:
    """A new aiobotocore session whose data loader is ``DataFiles`` (see the module's doc)."""
    import aiobotocore.session
    import botocore.loaders

    s = aiobotocore.session.AioSession()
    loader = botocore.loaders.create_loader(s.get_config_variable("data_path"))
    loader.file_loader = DataFiles()
    s.register_component("data_loader", loader)
    return s
