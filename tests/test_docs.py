"""The README stays short and its links lead somewhere. (mkdocs build --strict checks the links of
docs/; the code blocks of both are run by the root conftest.py.)"""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """Python-Markdown's default toc slug of a plain heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*$", text, re.M)}


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_exist():
    targets = [t for t in LINK.findall(README.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]
    assert targets, "no relative links found"
    for target in targets:
        path, _, anchor = target.partition("#")
        page = REPO / path
        assert page.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(page), f"README.md links to {target}: no heading with that anchor"


def test_readme_keeps_the_ci_commands():
    # .ci/run and the Makefile rely on the README's set-up and test commands
    text = README.read_text(encoding="utf-8")
    assert "make install" in text and "make test" in text


def test_a_readme_block_skipped_for_the_python_guide_stands_there_as_it_is():
    # such a block is not run from the README: the guide runs it, so it must be there letter for letter
    blocks = re.findall(r'<!-- skip: next "the Python guide runs this block[^"]*" -->\n```python\n(.*?)```',
                        README.read_text(encoding="utf-8"), re.S)
    guide = (REPO / "docs" / "guide" / "python.md").read_text(encoding="utf-8")
    assert blocks, "no README block defers to the Python guide"
    for block in blocks:
        assert f"```python\n{block}```" in guide, f"README block not in docs/guide/python.md as it stands:\n{block}"
