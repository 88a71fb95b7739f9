#!/usr/bin/env python3
"""Fails on a broken intra-repository link in the project's Markdown files: a relative link
whose file does not exist, or whose #anchor names no heading of that file. Links to other
sites are not followed (no network in CI). Prints every broken link with its file and line."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"target", ".git", "node_modules"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files():
    for base, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".md"):
                yield os.path.join(base, name)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found = set()
    in_code = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code and line.startswith("#"):
                found.add(slug(line.lstrip("#")))
    return found


def main():
    broken = []
    checked = 0
    for md in markdown_files():
        in_code = False
        with open(md, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.startswith("```"):
                    in_code = not in_code
                    continue
                if in_code:
                    continue
                for target in LINK.findall(line):
                    if re.match(r"^[a-z]+:", target):
                        continue  # another site, mailto:
                    checked += 1
                    path, _, anchor = target.partition("#")
                    dest = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
                    where = f"{os.path.relpath(md, ROOT)}:{number}: {target}"
                    if not os.path.exists(dest):
                        broken.append(f"{where}: no such file")
                    elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                        broken.append(f"{where}: no heading #{anchor}")
    for b in broken:
        print(b, file=sys.stderr)
    if broken:
        print(f"check-links: {len(broken)} broken of {checked} intra-repository links", file=sys.stderr)
        return 1
    print(f"check-links: {checked} intra-repository links, all resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
