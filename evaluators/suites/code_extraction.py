"""Pull a program out of a model's reply: fenced code blocks, or the raw continuation of a prompt.

Pure text functions. Chat models answer in Markdown (```python ... ```), often with prose and
usage examples around the solution; completion-style prompts get a bare continuation.
"""

from __future__ import annotations

import re
import textwrap

# An opening fence (``` plus an optional language tag) at the start of a line, up to the next closing fence.
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_OPEN_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n", re.M)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) of each fenced block in order; a last fence left open (output cut short) counts too."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    consumed = max((m.end() for m in _FENCE.finditer(text)), default=0)
    tail = _OPEN_FENCE.search(text, consumed)
    if tail:
        blocks.append((tail.group(1).lower(), text[tail.end():]))
    return blocks


def defines_function(code: str, name: str) -> bool:
    """True when `code` has a `def name(` (or `async def`) statement at any indentation."""
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.M) is not None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code a reply offers as its solution.

    Blocks tagged as Python are preferred over untagged or other blocks; among them, the last one
    defining `entry_point` when one is named (a reply often shows a draft, then the fix), else the
    last one. Without any fence the whole text is the code (a completion-style continuation).
    """
    blocks = code_blocks(text)
    if not blocks:
        return text
    python = [code for lang, code in blocks if lang in _PYTHON_TAGS]
    untagged = [code for lang, code in blocks if not lang]
    candidates = python or untagged or [code for _, code in blocks]
    if entry_point:
        defining = [code for code in candidates if defines_function(code, entry_point)]
        if defining:
            return defining[-1]
    return candidates[-1]


def function_program(prompt: str, code: str, entry_point: str) -> str:
    """Source that defines `entry_point` from a HumanEval-style prompt and the model's code.

    A full function is placed after the prompt, so the prompt's imports and helper functions stay
    defined and the model's definition replaces the prompt's docstring-only stub. Anything else
    continues the prompt verbatim, as the function's body; a body whose first line is not indented
    (a chat reply holding only the body) is indented one level.
    """
    if defines_function(code, entry_point):
        return prompt.rstrip() + "\n\n\n" + code.strip("\n") + "\n"
    if not prompt.endswith("\n"):  # the prompt stops mid-line: the completion finishes that line
        return prompt + code + "\n"
    body = code.lstrip("\n")
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        body = textwrap.indent(body, "    ")
    return prompt + body.rstrip("\n") + "\n"
