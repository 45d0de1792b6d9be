"""Every course notebook follows the course's shape and uses only current imports.

These checks read the stored notebooks; they run in a second and need no server. Executing the
notebooks is nbval's job (`make test`): `pytest --nbval --sanitize-with tests/notebooks/sanitize.cfg notebooks/`.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAME = re.compile(r"^\d{2}_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")

# Imports that still work somewhere but are deprecated, need the network, or belong to old major versions.
DEPRECATED = {
    r"langchain_community\.embeddings\b": "use langchain_huggingface.HuggingFaceEmbeddings",
    r"\bHuggingFaceEmbeddings\b.*langchain_community|langchain_community.*\bHuggingFaceEmbeddings\b": "use langchain_huggingface",
    r"langchain_community\.vectorstores\b": "use langchain_chroma.Chroma",
    r"langchain_community\.chat_models\b": "use langchain_openai.ChatOpenAI",
    r"langchain_community\.llms\b": "use a chat model from langchain_openai",
    r"\blangchain\.hub\b|from\s+langchain\s+import\s+hub\b": "prompt hubs need the network; write the prompt inline",
    r"\blangchain\.(chat_models|llms|embeddings|vectorstores|document_loaders|text_splitter|prompts|schema|chains)\b":
        "pre-1.0 LangChain module; use langchain_core / partner packages",
    r"\bRetrievalQA\b|\bLLMChain\b": "legacy chain; use LCEL",
    r"\bfrom\s+llama_index\s+import\b|\bllama_index\.legacy\b|\bServiceContext\b": "pre-0.10 LlamaIndex API; use llama_index.core",
    r"\bopenai\.(ChatCompletion|Completion)\b|\bopenai\.api_(base|key)\s*=": "openai<1.0 API; use the OpenAI client",
    r"\bOpenAIApi\b|\bnew\s+Configuration\s*\(": "openai npm v3 API; use `new OpenAI(...)`",
}

SECTION = {
    "title": re.compile(r"^#\s+\S", re.M),
    "estimated time": re.compile(r"\*\*Estimated time:\*\*\s*\d+\s*min", re.I),
    "learning goals": re.compile(r"^##\s+(Learning goals|What you will learn)\s*$", re.M | re.I),
    "recap": re.compile(r"^##\s+Recap\s*$", re.M | re.I),
    "exercise": re.compile(r"^##\s+Exercise\s*$", re.M | re.I),
    "self-check": re.compile(r"\A\s*##\s+Self-check\s*$", re.M | re.I),
}
# A numbered question of a self-check ("1. ..."), counted before its <details>.
QUESTION = re.compile(r"^\s*\d+\.\s+\S", re.M)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _is_solution(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and (
        "solution" in cell.metadata.get("tags", []) or cell.metadata.get("jupyter", {}).get("source_hidden", False)
    )


def _index_of(cells: list, pattern: re.Pattern[str]) -> int:
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown" and pattern.search(cell.source):
            return index
    return -1


def test_the_course_has_its_notebooks() -> None:
    names = {path.name for path in NOTEBOOKS}
    for prefix in ["00_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_", "10_"]:
        assert any(name.startswith(prefix) for name in names), f"no notebook {prefix}*.ipynb in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_and_kernel(path: Path) -> None:
    assert NAME.match(path.name), f"{path.name}: notebooks are named NN_short_name.ipynb"
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "notebooks run on the python3 kernel"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_goals_and_time(path: Path) -> None:
    first = _read(path).cells[0]
    assert first.cell_type == "markdown", "the first cell introduces the notebook"
    for name in ("title", "estimated time", "learning goals"):
        assert SECTION[name].search(first.source), f"{path.name}: the first cell lacks the {name}"
    goals = first.source[SECTION["learning goals"].search(first.source).end():]
    assert re.search(r"^\s*[-*]\s+\S", goals, re.M), f"{path.name}: learning goals should be a bullet list"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_closes_with_recap_and_exercise_with_hidden_solution(path: Path) -> None:
    cells = _read(path).cells
    recap, exercise = _index_of(cells, SECTION["recap"]), _index_of(cells, SECTION["exercise"])
    assert recap >= 0, f"{path.name}: no '## Recap' section"
    assert exercise >= recap, f"{path.name}: no '## Exercise' section after the recap"
    after = cells[exercise:]
    has_details = "<details>" in cells[exercise].source and "</details>" in cells[exercise].source
    solution_cells = [cell for cell in after if _is_solution(cell)]
    assert has_details or solution_cells, f"{path.name}: the exercise needs a <details> solution or a hidden solution cell"
    stray = [cell.source.splitlines()[0] for cell in after if cell.cell_type == "code" and not _is_solution(cell)]
    assert not stray, f"{path.name}: only solutions may follow the exercise, found {stray}"
    for cell in solution_cells:
        assert cell.metadata.get("jupyter", {}).get("source_hidden"), f"{path.name}: solution cells start collapsed"
    # After the exercise and its solutions, only the self-check (markdown) may follow.
    trailing = [cell for cell in after[1:] if cell.cell_type == "markdown" and not SECTION["self-check"].search(cell.source)]
    assert not trailing, f"{path.name}: after the exercise only its solutions and the self-check, found {[c.source.splitlines()[0] for c in trailing]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_a_self_check(path: Path) -> None:
    """Two or three short questions on the lesson, their answers collapsed in <details> (see notebook 09)."""
    cells = _read(path).cells
    last = cells[-1]
    assert last.cell_type == "markdown" and SECTION["self-check"].search(last.source), (
        f"{path.name}: the last cell should be a markdown cell starting with '## Self-check'"
    )
    assert _index_of(cells, SECTION["exercise"]) < len(cells) - 1, f"{path.name}: the self-check comes after the exercise"
    details = last.source.find("<details>")
    assert details > 0 and "</details>" in last.source[details:], f"{path.name}: the self-check's answers go in <details>...</details>"
    assert "<summary>" in last.source[details:], f"{path.name}: the <details> block needs a <summary> (e.g. Answers)"
    questions = QUESTION.findall(last.source[:details])
    assert 2 <= len(questions) <= 3, f"{path.name}: a self-check asks two or three questions, found {len(questions)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_deprecated_imports(path: Path) -> None:
    code = "\n".join(cell.source for cell in _read(path).cells if cell.cell_type == "code")
    problems = [f"{m.group(0)!r}: {why}" for pattern, why in DEPRECATED.items() for m in re.finditer(pattern, code)]
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_deprecation_check_catches_the_usual_suspects() -> None:
    bad = [
        "from langchain_community.embeddings import HuggingFaceEmbeddings",
        "from langchain_community.vectorstores import Chroma",
        "from langchain import hub",
        "prompt = langchain.hub.pull('rlm/rag-prompt')",
        "from langchain.chat_models import ChatOpenAI",
        "from llama_index import VectorStoreIndex",
        "openai.ChatCompletion.create(model='x')",
    ]
    for line in bad:
        assert any(re.search(pattern, line) for pattern in DEPRECATED), line
    good = [
        "from langchain_huggingface import HuggingFaceEmbeddings",
        "from langchain_chroma import Chroma",
        "from langchain_community.document_loaders import WebBaseLoader",
        "from langchain_openai import ChatOpenAI",
        "from llama_index.core import VectorStoreIndex",
    ]
    for line in good:
        assert not any(re.search(pattern, line) for pattern in DEPRECATED), line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stored_small_and_mostly_checked(path: Path) -> None:
    nb = _read(path)
    assert not any(key.startswith("nbval") for key in nb.metadata), "never switch nbval off for a whole notebook"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name}: no code"
    unexecuted = [cell.source.splitlines()[0] for cell in code_cells if cell.execution_count is None]
    assert not unexecuted, f"{path.name}: outputs are not stored for {unexecuted}"
    errors = [out.get("ename") for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: stored outputs contain errors {errors}"
    # The validation policy (README, "The numerics of a run"): cells of model text carry the tag
    # nbval-ignore-output, the one form used (a marker comment would be one more thing for a learner to read);
    # the rest, most of each notebook, is compared; a lesson that rests on model text checks it in the open.
    assert not [cell for cell in code_cells if "NBVAL_" in cell.source], f"{path.name}: use the cell tag nbval-ignore-output, not a marker comment"
    ignored = [cell for cell in code_cells if "nbval-ignore-output" in cell.metadata.get("tags", [])]
    assert len(ignored) <= max(1, (2 * len(code_cells)) // 3), f"{path.name}: {len(ignored)} of {len(code_cells)} cells skip the output check"
    checks = [cell for cell in code_cells if re.search(r"^\s*assert\b", cell.source, re.M) and cell not in ignored]
    if ignored:
        assert checks, f"{path.name}: model text is shown but no visible check cell (an untagged cell with assert) tests what the lesson needs"
    size = sum(len(str(out)) for cell in code_cells for out in cell.outputs)
    assert size < 40_000, f"{path.name}: stored outputs are {size} characters; keep them small"
    # nbval compares stderr too: progress bars and per-kernel temp paths would make every run differ.
    stderr = "".join(out.text for cell in code_cells for out in cell.outputs if out.output_type == "stream" and out.name == "stderr")
    noise = re.findall(r"\d+it/s|it/s\]|\r|/tmp/ipykernel_\d+|IProgress not found", stderr)
    assert not noise, f"{path.name}: progress bars or run-specific paths in stored stderr: {noise[:3]}"
