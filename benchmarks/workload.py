"""The benchmark workload: real text, fixed on disk, drawn into requests by a seeded generator.

`workload.json` holds two pools of real text collected once from this kind of machine's installed
software (`python benchmarks/workload.py build` rewrites it):

- `lines`: one-line package descriptions (Python distributions' `Summary`, Debian packages' synopsis);
- `passages`: prose from the same packages' long descriptions (READMEs): consecutive paragraphs of
  one document joined into chunks of 400-2500 characters, as a RAG chunker would cut them.

Requests are drawn from those pools by `requests(seed, count)`: 1-8 texts each, a passage with
probability PASSAGE_SHARE, the rest one-liners. The same seed gives the same requests everywhere,
so every server in a comparison does exactly the same work.
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workload.json"
PASSAGE_SHARE = 0.3
MAX_TEXTS = 8
CHUNK_CHARS = (400, 2500)


def load() -> dict:
    return json.loads(WORKLOAD.read_text(encoding="utf-8"))


def requests(seed: int, count: int, pools: dict | None = None) -> list[list[str]]:
    """`count` embed requests: each a list of 1-8 texts."""
    pools = pools or load()
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(1, MAX_TEXTS)
        out.append([_text(rng, pools) for _ in range(n)])
    return out


def rerank_requests(seed: int, count: int, pools: dict | None = None) -> list[tuple[str, list[str]]]:
    """`count` rerank requests: a one-line query and 4-16 candidate texts (mostly passages), or exactly
    $BENCH_RERANK_DOCS of them (compare.py --rerank-docs; the environment reaches its workers too)."""
    pools = pools or load()
    rng = random.Random(seed)
    fixed = int(os.environ.get("BENCH_RERANK_DOCS") or 0)
    out = []
    for _ in range(count):
        query = rng.choice(pools["lines"])
        n = fixed or rng.randint(4, 16)
        docs = [rng.choice(pools["passages"] if rng.random() < 0.7 else pools["lines"]) for _ in range(n)]
        out.append((query, docs))
    return out


def single_texts(seed: int, count: int, pools: dict | None = None) -> list[str]:
    """One text per request, for the latency comparison at concurrency 1."""
    pools = pools or load()
    rng = random.Random(seed)
    return [_text(rng, pools) for _ in range(count)]


def _text(rng: random.Random, pools: dict) -> str:
    return rng.choice(pools["passages"] if rng.random() < PASSAGE_SHARE else pools["lines"])


# ---- building workload.json (run once; the result is committed) ----------------------------------

_SKIP_LINE = re.compile(r"^\s*(```|~~~|\||>>>|\.\. |#|=+$|-{3,}|\*{3,}|\+|\$ |pip |!\[|\[!|<|:\w+:|\s{4})")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_RST_REF = re.compile(r"`([^`<]+?)\s*(<[^>]+>)?`_+")
_MARKUP = re.compile(r"[*`]+")


def _prose(paragraph: str) -> str | None:
    lines = [ln for ln in paragraph.splitlines() if ln.strip()]
    if not lines or any(_SKIP_LINE.match(ln) for ln in lines):
        return None
    text = " ".join(ln.strip() for ln in lines)
    text = _MARKUP.sub("", _RST_REF.sub(r"\1", _LINK.sub(r"\1", text)))
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) < 80 or "http" in text or "{" in text:
        return None
    letters = sum(c.isalpha() or c == " " for c in text)
    if letters < 0.85 * len(text) or text.count(". ") < 1:
        return None
    return text


def _chunks(body: str):
    """Runs of consecutive prose paragraphs, cut at CHUNK_CHARS; a non-prose paragraph ends a run."""
    run: list[str] = []
    for paragraph in [*re.split(r"\n\s*\n", body.replace("\r\n", "\n")), ""]:
        text = _prose(paragraph)
        if text and sum(map(len, run)) + len(text) <= CHUNK_CHARS[1]:
            run.append(text)
            continue
        if sum(map(len, run)) >= CHUNK_CHARS[0]:
            yield " ".join(run)
        run = [text] if text and len(text) <= CHUNK_CHARS[1] else []


def _python_packages(site_dirs: list[Path]):
    import importlib.metadata as md

    for dist in md.distributions(path=[str(p) for p in site_dirs]):
        meta = dist.metadata
        body = meta.get_payload() or meta.get("Description") or ""
        yield meta.get("Name"), meta.get("Summary") or "", body


def _debian_packages(status: Path):
    if not status.is_file():
        return
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        name = re.search(r"^Package: (.+)$", block, re.M)
        desc = re.search(r"^Description: (.*)\n((?: .*\n?)*)", block, re.M)
        if not (name and desc):
            continue
        long = "\n".join("" if ln.strip() == "." else ln[1:] for ln in desc.group(2).splitlines())
        yield name.group(1), desc.group(1), long


def build(site_dirs: list[Path], dpkg_status: Path = Path("/var/lib/dpkg/status")) -> dict:
    lines, passages = set(), set()
    sources = [*_python_packages(site_dirs), *_debian_packages(dpkg_status)]
    for _name, summary, body in sources:
        summary = re.sub(r"\s+", " ", summary).strip()
        if 10 <= len(summary) <= 200 and summary.upper() != "UNKNOWN":
            lines.add(summary)
        passages.update(_chunks(body))
    return {
        "about": "Real text for benchmarks: one-line package descriptions and README paragraphs "
        "(Python distributions' metadata and Debian package descriptions). See benchmarks/workload.py.",
        "lines": sorted(lines),
        "passages": sorted(passages),
    }


def main() -> None:
    import argparse
    import site
    import sys

    p = argparse.ArgumentParser(description="Rebuild benchmarks/workload.json from installed packages")
    p.add_argument("command", choices=["build", "stats"])
    p.add_argument("--site", action="append", help="site-packages folder to read (repeatable)")
    args = p.parse_args()
    if args.command == "build":
        dirs = [Path(s) for s in (args.site or [*site.getsitepackages(), *sys.path])]
        data = build([d for d in dirs if d.is_dir()])
        WORKLOAD.write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    data = load()
    for key in ("lines", "passages"):
        sizes = sorted(len(t) for t in data[key])
        print(f"{key}: {len(sizes)} texts, median {sizes[len(sizes) // 2]} chars, max {sizes[-1]}")


if __name__ == "__main__":
    main()
