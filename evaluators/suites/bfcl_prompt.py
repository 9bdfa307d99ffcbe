"""The prompt bfcl-eval 2026.3.23 gives a prompting (non-function-calling) model: the tool_use suite's `prompt: bfcl`.

What bfcl-eval does, step by step, for the single-turn Python categories this suite scores:

1. `load_dataset_entry` appends a language hint to every function's description (" Note that the provided
   function is in Python 3 syntax."); for Python categories the parameters are left as they are (only Java and
   JavaScript categories rewrite parameter types and descriptions).
2. `system_prompt_pre_processing_chat_model` builds its default system prompt (format
   `ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic`) around the
   function docs dumped as JSON (`json.dumps(functions, indent=4)`: ASCII-escaped, keys in the data's order).
   When the item's first message is a system message, the system prompt is put before its content with a blank
   line between; otherwise it becomes a new first message with role `system`.
3. The OSS prompting handler adds the item's first-turn messages as they are (system, user and assistant turns
   of BFCL's live items included) and renders them with the model's chat template; for Qwen models
   (`QwenHandler._format_prompt`) that is ChatML: `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message and
   `<|im_start|>assistant\\n` to open the reply.

The template text is bfcl-eval's (Apache-2.0) and lives as data in evaluators/data/bfcl/prompt.json, written by
tests/bfcl/make_prompts.py from bfcl-eval's own functions; it must stay verbatim for the scores to be comparable.
tests/test_bfcl_prompt.py checks the result byte for byte against prompts bfcl-eval built (tests/bfcl/prompts.jsonl).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

from evaluators.errors import DataError

__all__ = ["bfcl_messages", "bfcl_system_prompt", "chatml", "prompt_data"]


@lru_cache(maxsize=1)
def prompt_data() -> dict[str, Any]:
    """evaluators/data/bfcl/prompt.json: bfcl-eval's system prompt template, the Python hint, the JSON indent."""
    path = resources.files("evaluators").joinpath("data/bfcl/prompt.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read bfcl-eval's prompt template {path}: {exc}") from None
    for key in ("system_prompt", "functions_placeholder", "function_doc_json_indent", "python_description_hint"):
        if key not in data:
            raise DataError(f"{path} lacks {key!r}; regenerate it with tests/bfcl/make_prompts.py")
    if data["system_prompt"].count(data["functions_placeholder"]) != 1:
        raise DataError(f"{path}: the system prompt must hold the placeholder {data['functions_placeholder']!r} once")
    return data


def _python_function_docs(functions: Sequence[Mapping[str, Any]], item_id: str) -> list[dict[str, Any]]:
    """The function docs with bfcl-eval's Python hint after each description (copies: the item is not changed)."""
    hint = prompt_data()["python_description_hint"]
    docs = copy.deepcopy([dict(f) for f in functions])
    for doc in docs:
        if not isinstance(doc.get("description"), str):
            # bfcl-eval itself stops with a KeyError / TypeError here: there is no BFCL prompt to reproduce.
            raise DataError(f"tool_use item {item_id}: function {doc.get('name')!r} has no string 'description'; "
                            "prompt: bfcl needs one (bfcl-eval appends its Python hint to it)")
        doc["description"] = doc["description"] + hint
    return docs


def bfcl_system_prompt(functions: Sequence[Mapping[str, Any]], item_id: str = "item") -> str:
    """bfcl-eval's default prompting system prompt for these functions (hint added, docs as indented JSON)."""
    data = prompt_data()
    docs = json.dumps(_python_function_docs(functions, item_id), indent=data["function_doc_json_indent"])
    return data["system_prompt"].replace(data["functions_placeholder"], docs)


def bfcl_messages(item: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages bfcl-eval sends for a normalised tool_use item: its system prompt first (merged into the
    item's own system message when there is one), then the item's first-turn messages unchanged."""
    system = bfcl_system_prompt(item["function"], str(item.get("id", "item")))
    messages = [{"role": str(m["role"]), "content": m["content"]} for m in item["messages"]]
    if not messages:
        raise DataError(f"tool_use item {item.get('id')}: no messages to prompt with")
    if messages[0]["role"] == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
    else:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def chatml(messages: Sequence[Mapping[str, str]]) -> str:
    """The text bfcl-eval's Qwen prompting handler sends for these messages (system, user and assistant turns
    without reasoning): ChatML with the assistant turn opened. Used for `chat: false` with `prompt: bfcl`, so the
    exact BFCL text reaches the model whatever its tokenizer's chat template."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("chatml: a single-turn BFCL prompt ends with a user message")
    text = ""
    for message in messages:
        role, content = message["role"], message["content"]
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"chatml: role {role!r} is not one a single-turn BFCL item has")
        if role == "assistant" and "</think>" in content:  # the handler drops an earlier turn's reasoning
            content = content.split("</think>")[-1].lstrip("\n")
        text += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"
