"""MkDocs hook: links from a page to the repository's code, e.g. ``[gates.py](../jaxbp/ops/gates.py)``.

On GitHub such a relative link opens the file. MkDocs only knows the files under ``docs_dir``, so under
``--strict`` it would reject them. This hook checks that the target exists in the repository (a missing
one is a warning, which ``--strict`` turns into a failed build) and rewrites the link: to
``<repo_url>/blob/main/<path>`` when ``repo_url`` is set in ``mkdocs.yml``, else to the plain path.
"""

import logging
import os
import re

log = logging.getLogger("mkdocs.hooks.code_links")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>\.\./[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")


def on_page_markdown(markdown, page, config, files):
  docs_dir = os.path.realpath(config["docs_dir"])
  repo_root = os.path.dirname(docs_dir)
  page_dir = os.path.dirname(os.path.join(docs_dir, page.file.src_path))
  repo_url = (config.get("repo_url") or "").rstrip("/")

  def rewrite(match):
    target = os.path.realpath(os.path.join(page_dir, match["target"]))
    if target.startswith(docs_dir + os.sep):
      return match[0]  # a page of the site: MkDocs checks it
    rel = os.path.relpath(target, repo_root)
    if rel.startswith("..") or not os.path.exists(target):
      log.warning("%s links to %s, which is not a file of the repository", page.file.src_path,
                  match["target"])
      return match[0]
    if repo_url:
      kind = "tree" if os.path.isdir(target) else "blob"
      return f"[{match['text']}]({repo_url}/{kind}/main/{rel}{match['anchor'] or ''})"
    return match["text"] if match["text"].startswith("`") else f"{match['text']} (`{rel}`)"

  return LINK.sub(rewrite, markdown)
