"""The site stays readable: under 12,000 words in all, the speed and parity pages under 1,000 each.

Counted as a reader sees a page by default: prose and code, without HTML comments and without
collapsed sections (``<details>``), where the detail tables live. The API reference is generated
from the docstrings and not counted.
"""
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
SITE_WORDS = 12_000
PAGE_WORDS = {"speed.md": 1_000, "parity.md": 1_000}


def shown_words(text: str) -> int:
    """Whitespace-separated tokens holding a letter or digit, outside comments and collapsed sections."""
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    shown, depth = [], 0
    for line in text.splitlines():
        depth += len(re.findall(r"<details\b", line))
        if depth == 0:
            shown.append(line)
        depth -= len(re.findall(r"</details>", line))
    return sum(1 for token in " ".join(shown).split() if re.search(r"[A-Za-z0-9]", token))


def pages() -> dict[str, int]:
    return {str(p.relative_to(DOCS)): shown_words(p.read_text(encoding="utf-8"))
            for p in sorted([*DOCS.glob("*.md"), *DOCS.glob("guide/*.md")])}


def test_the_site_and_its_longest_pages_stay_within_their_word_budgets():
    counts = pages()
    assert len(counts) > 20 and all(counts.values())
    total = sum(counts.values())
    longest = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    assert total <= SITE_WORDS, f"{total} words shown (budget {SITE_WORDS}); longest: {longest}"
    for page, budget in PAGE_WORDS.items():
        assert counts[page] <= budget, f"{page}: {counts[page]} words shown (budget {budget})"


def test_collapsed_sections_and_comments_are_not_counted():
    assert shown_words("one two <!-- three four --> five") == 3
    assert shown_words("a b\n<details markdown=\"1\">\n<summary>x</summary>\nc d e\n</details>\nf | --- |") == 3
