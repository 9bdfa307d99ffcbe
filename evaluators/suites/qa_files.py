"""Load user-supplied long-context QA files (HotpotQA / SQuAD style) as memory-suite items.

Accepted files:
- JSON lines (`.jsonl`) or a JSON list (`.json`) of records:
  - `id` (or `_id`, `qid`; default `<file stem>/<record number>`), `question`;
  - the context as `context`: a string, a list of paragraph strings, HotpotQA's list of
    `[title, [sentence, ...]]`, or the Hugging Face HotpotQA form `{"title": [...], "sentences": [[...], ...]}`;
  - the gold answers as `answers`: a string, a list of strings or SQuAD's `{"text": [...]}`; or `answer`: a string;
  - optional `split` (`search` / `test`) and `task` (a label for per-task scores).
- The official SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`, v1.1 and v2.0;
  unanswerable v2.0 questions are skipped).

Paragraphs are joined with blank lines; a HotpotQA paragraph starts with its title and a colon.
Every item comes out as `{"id", "task", "context", "question", "answers", "split"?}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from evaluators.errors import DataError

__all__ = ["load_qa_file", "qa_item"]

log = logging.getLogger(__name__)


def load_qa_file(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"memory data {path} does not exist; give a QA file (.jsonl or .json, see evaluators/suites/qa_files.py)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and path.suffix != ".jsonl":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # JSON lines whose first record is an object
        if isinstance(document, Mapping) and isinstance(document.get("data"), list):
            return _unique(_squad_items(document, path), path)
    if stripped.startswith("["):
        try:
            records = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); one JSON object per line") from None
    return _unique([qa_item(r, f"{path}:{n}", default_id=f"{path.stem}/{n}") for n, r in records], path)


def qa_item(record: Mapping[str, Any], where: str = "item", default_id: str | None = None) -> dict[str, Any]:
    """One record -> `{"id", "task", "context", "question", "answers", "split"?}`; DataError names `where`."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a QA record must be a JSON object")
    item_id = record.get("id", record.get("_id", record.get("qid", default_id)))
    if item_id is None:
        raise DataError(f"{where}: the record has no 'id'")
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        raise DataError(f"{where}: 'question' must be a non-empty string")
    if "context" not in record:
        raise DataError(f"{where}: the record has no 'context' (a string, a list of paragraphs, or HotpotQA's "
                        "[[title, [sentences]], ...])")
    answers = _answers(record.get("answers", record.get("answer")), where)
    item = {
        "id": str(item_id),
        "task": str(record.get("task", record.get("type", "qa"))),
        "context": _context(record["context"], where),
        "question": record["question"].strip(),
        "answers": answers,
    }
    if "split" in record:
        item["split"] = record["split"]
    return item


def _context(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Mapping) and isinstance(raw.get("title"), list) and isinstance(raw.get("sentences"), list):
        raw = list(zip(raw["title"], raw["sentences"]))  # the Hugging Face HotpotQA layout
    if isinstance(raw, (list, tuple)):
        paragraphs = []
        for part in raw:
            if isinstance(part, str):
                paragraphs.append(part)
            elif isinstance(part, (list, tuple)) and len(part) == 2 and isinstance(part[0], str):
                title, sentences = part
                body = "".join(sentences) if isinstance(sentences, list) else str(sentences)
                paragraphs.append(f"{title}: {body}")
            else:
                raise DataError(f"{where}: a context paragraph must be a string or [title, [sentences]], got {part!r:.80}")
        return "\n\n".join(paragraphs)
    raise DataError(f"{where}: 'context' must be a string, a list of paragraphs or [[title, [sentences]], ...]")


def _answers(raw: Any, where: str) -> list[str]:
    if isinstance(raw, Mapping) and "text" in raw:
        raw = raw["text"]  # SQuAD / Hugging Face: {"text": [...], "answer_start": [...]}
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        answers = [a["text"] if isinstance(a, Mapping) and "text" in a else a for a in raw]
        answers = [str(a) for a in answers if str(a).strip()]
        if answers:
            return answers
    raise DataError(f"{where}: no gold answer; give 'answers' (a string, a list of strings, or {{\"text\": [...]}}) "
                    "or 'answer'")


def _squad_items(document: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    items, skipped = [], 0
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                if qa.get("is_impossible") or not qa.get("answers"):
                    skipped += 1
                    continue
                record = {"id": qa.get("id", f"{path.stem}/{a}/{p}/{q}"), "question": qa.get("question"),
                          "context": paragraph.get("context"), "answers": qa["answers"], "task": "squad"}
                items.append(qa_item(record, f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"))
    if skipped:
        log.info("%s: skipped %d unanswerable question(s)", path, skipped)
    return items


def _unique(items: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise DataError(f"{path}: the id {item['id']!r} appears twice; ids must be unique")
        seen.add(item["id"])
    if not items:
        raise DataError(f"{path} holds no QA record")
    return items
