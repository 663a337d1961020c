"""From a record to text segments, each marked trained (the response) or masked (the prompt).

Which template (decided once per tokenizer):

* When the tokenizer has a chat template (``tokenizer.chat_template``), every record is rendered
  with it, as the model will see it at inference: alpaca becomes a user turn
  ``instruction`` (+ a blank line + ``input`` when present) and an assistant turn ``output``
  (an optional ``system`` field becomes a system turn); prompt/completion becomes a user turn
  ``prompt`` and an assistant turn ``completion``; chat records are rendered as they are.
  Only assistant turns are trained, each up to and including the template's end-of-turn marker.
* Without a chat template, alpaca uses the text template ``ALPACA_TEMPLATE`` (the ``### Input``
  block is left out when ``input`` is empty), prompt/completion is the plain concatenation,
  and chat uses ``### User:`` / ``### Assistant:`` blocks with EOS closing every assistant turn.

Plain text is trained as a whole. Messages after the last assistant turn are dropped (they
would train nothing). Assistant spans are found by rendering the conversation prefixes
(``messages[:i]`` with the generation prompt, then ``messages[:i + 1]``); for templates whose
prefixes do not line up with the full rendering, the assistant's content is searched for in
order instead.
"""

from __future__ import annotations

from typing import Any

from senior_intern.config import DatasetFormat

Segment = tuple[str | None, bool]
"""``(text, trained)``; text ``None`` stands for the tokenizer's EOS token."""

EOS: None = None

ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                 "bot": "assistant", "system": "system", "tool": "tool"}


class RecordError(ValueError):
    """A record that cannot be turned into a sample; the loader adds the file and line."""


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _text_field(data: dict, key: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise RecordError(f"field {key!r} is {kind}")
    if required and not value.strip():
        raise RecordError(f"field {key!r} is empty")
    return value


def alpaca_user_text(instruction: str, input_text: str) -> str:
    """The user turn of an alpaca record rendered with a chat template."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


def alpaca_prompt(instruction: str, input_text: str) -> str:
    """The masked prompt of the Alpaca text template (no chat template)."""
    if input_text.strip():
        return ALPACA_TEMPLATE.format(instruction=instruction, input=input_text)
    return ALPACA_TEMPLATE_NO_INPUT.format(instruction=instruction)


def normalise_messages(data: dict) -> list[dict[str, str]]:
    """``messages`` ({role, content}) or ShareGPT ``conversations`` ({from, value}) as role/content dicts,
    cut after the last assistant turn."""
    raw = data.get("messages", data.get("conversations"))
    if not isinstance(raw, list) or not raw:
        raise RecordError("'messages' must be a non-empty list of {role, content} objects")
    messages = []
    for n, m in enumerate(raw, start=1):
        if not isinstance(m, dict):
            raise RecordError(f"message {n} is not an object with 'role' and 'content'")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            raise RecordError(f"message {n} has an unknown role {role!r} (use system, user or assistant)")
        if not isinstance(content, str):
            raise RecordError(f"message {n} has no text 'content'")
        messages.append({"role": _ROLE_ALIASES[role.lower()], "content": content})
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise RecordError("the conversation has no assistant turn to train on")
    messages = messages[: last + 1]
    if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise RecordError("every assistant turn is empty")
    return messages


def record_segments(data: Any, fmt: DatasetFormat, tokenizer: Any) -> list[Segment]:
    """Segments of one record in format ``fmt`` (alpaca, prompt_completion, chat or text)."""
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    templated = has_chat_template(tokenizer)
    if fmt == DatasetFormat.TEXT:
        return [(_text_field(data, "text"), True)]
    if fmt == DatasetFormat.ALPACA:
        instruction, output = _text_field(data, "instruction"), _text_field(data, "output")
        input_text = _text_field(data, "input", required=False)
        if not templated:
            return [(alpaca_prompt(instruction, input_text), False), (output, True)]
        messages = [{"role": "user", "content": alpaca_user_text(instruction, input_text)},
                    {"role": "assistant", "content": output}]
        system = data.get("system")
        if isinstance(system, str) and system.strip():
            messages.insert(0, {"role": "system", "content": system})
        return chat_segments(tokenizer, messages)
    if fmt == DatasetFormat.PROMPT_COMPLETION:
        prompt = _text_field(data, "prompt", required=False)
        completion = _text_field(data, "completion")
        if not templated:
            return [(prompt, False), (completion, True)]
        return chat_segments(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
    if fmt == DatasetFormat.CHAT:
        return chat_segments(tokenizer, normalise_messages(data))
    raise RecordError(f"records cannot be read in the {fmt.value} format")


def chat_segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[Segment]:
    """Segments of a conversation: assistant turns trained, everything else masked."""
    if not has_chat_template(tokenizer):
        return _plain_chat_segments(messages)
    full = _render(tokenizer, messages, False)
    eos = getattr(tokenizer, "eos_token", None)
    segments: list[Segment] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not message["content"].strip():
            continue
        span = _span_from_prefixes(tokenizer, messages, i, full, cursor)
        if span is None:
            span = _span_by_search(full, message["content"], cursor, eos)
        if span is None:
            raise RecordError(f"assistant turn (message {i + 1}) not found in the chat template's output")
        start, end = span
        if start > cursor:
            segments.append((full[cursor:start], False))
        segments.append((full[start:end], True))
        cursor = end
    return segments


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raises its own errors (e.g. "roles must alternate")
        raise RecordError(f"the tokenizer's chat template rejected the conversation: {exc}") from exc
    if not isinstance(text, str):
        raise RecordError("the tokenizer's chat template did not return text")
    return text


def _span_from_prefixes(tokenizer: Any, messages: list, i: int, full: str, cursor: int) -> tuple[int, int] | None:
    """[start, end) of assistant turn ``i`` in ``full`` from renderings of the prefixes, or None."""
    try:
        before = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
    except RecordError:
        return None
    start, end = len(before), len(upto)
    if start < cursor or not upto.startswith(before) or not full.startswith(upto):
        return None
    while end > start and upto[end - 1].isspace():
        end -= 1
    if messages[i]["content"].strip() not in upto[start:end]:
        return None
    return start, end


def _span_by_search(full: str, content: str, cursor: int, eos: str | None) -> tuple[int, int] | None:
    """[start, end) of ``content`` at or after ``cursor``, extended over a directly following EOS."""
    content = content.strip()
    start = full.find(content, cursor)
    if start < 0:
        return None
    end = start + len(content)
    if eos and full.startswith(eos, end):
        end += len(eos)
    return start, end


def _plain_chat_segments(messages: list[dict[str, str]]) -> list[Segment]:
    """``### User:`` / ``### Assistant:`` blocks for tokenizers without a chat template."""
    segments: list[Segment] = []
    for message in messages:
        header = f"### {message['role'].capitalize()}:\n"
        if message["role"] == "assistant" and message["content"].strip():
            segments += [(header, False), (message["content"], True), (EOS, True), ("\n\n", False)]
        else:
            segments.append((header + message["content"] + "\n\n", False))
    while segments and not segments[-1][1]:
        segments.pop()
    return segments
