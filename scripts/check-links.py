#!/usr/bin/env python3
"""Checks the relative links of the project's Markdown: README.md, docs/*.md, loadtest/README.md
and deploy/observability/README.md (or the files given as arguments).

For every relative link `[text](target)` (and reference definition `[label]: target`) outside
fenced code blocks and inline code: the target file must exist, relative to the linking file,
and a `#anchor` must match a heading of the target Markdown file under GitHub's rules (the
heading's text lowercased; every character that is not a letter, digit, space, hyphen or
underscore removed; spaces turned into hyphens; a repeated slug gets -1, -2, ...). Links with a
scheme (http:, https:, mailto:, ...) are not checked.

Prints each broken link as `file:line: target (reason)`; exits 1 if there is any.
Python 3 standard library only.
"""
import os
import re
import sys
import urllib.parse

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_FILES = ["README.md", "docs/*.md", "loadtest/README.md", "deploy/observability/README.md"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(path):
    """(line number, text) of each line outside fenced code blocks."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = FENCE.match(line)
            if fence is None:
                if m:
                    fence = m.group(1)
                    continue
                yield n, line
            elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None


def slug(text):
    """GitHub's anchor for a heading's Markdown text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen, found = {}, set()
        for _, line in prose_lines(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        _anchors[path] = found
    return _anchors[path]


def targets(line):
    m = REFDEF.match(line)
    if m:
        yield m.group(1)
        return
    for m in LINK.finditer(INLINE_CODE.sub("", line)):
        yield m.group(1)


def check(path):
    broken = []
    shown = os.path.relpath(path, ROOT)
    for n, line in prose_lines(path):
        for target in targets(line):
            if not target or SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = path
            if file_part:
                dest = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(file_part)))
                if not os.path.exists(dest):
                    broken.append(f"{shown}:{n}: {target} (no such file: {os.path.relpath(dest, ROOT)})")
                    continue
            if anchor:
                if not dest.endswith(".md") or os.path.isdir(dest):
                    broken.append(f"{shown}:{n}: {target} (an anchor into a file that is not Markdown)")
                elif urllib.parse.unquote(anchor) not in anchors(dest):
                    broken.append(f"{shown}:{n}: {target} (no heading #{anchor} in {os.path.relpath(dest, ROOT)})")
    return broken


def main(argv):
    if argv:
        files = [os.path.abspath(a) for a in argv]
    else:
        import glob

        files = sorted({p for pattern in DEFAULT_FILES for p in glob.glob(os.path.join(ROOT, pattern))})
    broken = [b for f in files for b in check(f)]
    for b in broken:
        print(b)
    if broken:
        print(f"{len(broken)} broken link(s) in {len(files)} Markdown files", file=sys.stderr)
        return 1
    print(f"links OK in {len(files)} Markdown files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
