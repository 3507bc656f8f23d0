"""Pages whose text lives elsewhere in the repository, and links that point into the repository.

README.md is the landing page of both the repository and the site; the bundle and the Docker setup keep
their READMEs beside their files; CHANGELOG.md stays at the root. This hook adds them to the site as pages
(no copy is kept in docs/), and rewrites every relative link so it works on the site: a link to one of
those files, or to a page under docs/, goes to that page; a link to any other file of the repository (a
unit file, the example config) becomes its path in code, since the site does not serve it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PAGES = {  # repository file -> site page
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
    "pimcore-bundle/README.md": "bundle.md",
    "deploy/README.md": "deploy.md",
}
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")  # links and images


def on_files(files: Files, config: Any) -> Files:
    for source, page in PAGES.items():
        path = ROOT / source
        if path.exists():
            files.append(File.generated(config, page, content=path.read_text(encoding="utf-8")))
    return files


def _repository_path(page: str) -> str:
    """The repository path of the page's source, so its relative links can be resolved."""
    for source, target in PAGES.items():
        if target == page:
            return source
    return "docs/" + page


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    here = _repository_path(page.file.src_uri)
    folder = posixpath.dirname(here)

    def fix(match: re.Match[str]) -> str:
        bang, text, target = match.group(1), match.group(2), match.group(3)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)  # a URL, a mail address, an anchor on this page
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(folder, path))
        if resolved in PAGES:
            site = PAGES[resolved]
        elif resolved.startswith("docs/"):
            site = resolved[len("docs/") :]
        else:
            return f"{text} (`{resolved}` in the repository)" if text.strip("`") != resolved else f"`{resolved}`"
        mine = page.file.src_uri
        relative = posixpath.relpath(site, posixpath.dirname(mine) or ".")
        return f"{bang}[{text}]({relative}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, markdown)
