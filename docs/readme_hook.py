"""MkDocs hook: the README becomes the site's home page, with its links made to work inside the site.

The README is written for the repository's front page, so its links are relative to the repository root.
Here `docs/...` links lose their prefix (those files are already in the site), and any other file it links
to (the benchmark plots) is added to the site at the same path. A link to a file that does not exist is left
as it is, so `mkdocs build --strict` reports it. Nothing is copied into the working tree.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

_LINK = re.compile(r"\]\((?!https?:|#|/)([^)\s#]+)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    docs_prefix = Path(config.docs_dir).relative_to(root).as_posix() + "/"
    for target in sorted(set(_LINK.findall(readme))):
        if target.startswith(docs_prefix) or files.get_file_from_path(target) is not None:
            continue
        if (root / target).is_file():
            files.append(File.generated(config, target, abs_src_path=str(root / target)))
    home = readme.replace("](" + docs_prefix, "](")
    files.append(File.generated(config, "index.md", content=home))
    return files
