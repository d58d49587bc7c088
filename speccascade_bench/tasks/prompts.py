"""Prompts of a task: templates over a row's fields, few-shot examples, chat templates and truncation.

A task's input is `prefix`, then its shots, each `shot prompt + target_delimiter + shot target` followed by
`fewshot.delimiter`, then the evaluated example's prompt. With `chat`, the shots are user and assistant
turns of the tokenizer's chat template instead, and the example's prompt is the last user turn.

When the prompt is longer than `task.max_source_tokens`, the shots farthest from the question are dropped
first; a prompt still too long without shots is cut from the left for decoder-only models (which keeps the
question at its end, and the leading BOS; an lm-eval task's context loses its leading tokens too, as lm-eval's hf
model cuts it) and from the right for encoder-decoder models (as their tokenizers truncate).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass


class TemplateError(ValueError):
    """A prompt template that cannot be parsed or uses positional fields."""


_FORMATTER = string.Formatter()


def _dotted(field_name: str) -> str:
    """`translation[en]` or `translation.en` -> `translation.en`."""
    return field_name.replace("[", ".").replace("]", "")


def template_fields(template: str | None) -> tuple[str, ...]:
    """The row fields a template names, dotted (`{translation[en]}` -> `translation.en`), in order."""
    if template is None:
        return ()
    names = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"{exc} (write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or name.isdigit():
            raise TemplateError("positional fields such as {} or {0} are not allowed; name a field, e.g. {question}")
        if spec or conversion:
            raise TemplateError(f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: a "
                                "template substitutes fields as they are; conversions (!r) and format specs (:>10) "
                                "are not allowed")
        names.append(_dotted(name))
    return tuple(dict.fromkeys(names))


def as_text(value) -> str:
    """A field value as prompt text: a list is one item per line, an integral float its integer (tables
    store a column of 1 and 2.5 as floats). TypeError for a value that is not text: null, a mapping, a
    boolean."""
    if isinstance(value, list | tuple):
        return "\n".join(as_text(item) for item in value)
    if value is None or isinstance(value, bool | dict):
        raise TypeError("null" if value is None else type(value).__name__)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _RowFormatter(string.Formatter):
    def get_field(self, field_name, args, kwargs):
        from .prompts import get_field

        return as_text(get_field(kwargs["row"], _dotted(field_name))), field_name


def render(template: str, row: dict) -> str:
    """The template with each `{field}` replaced by the row's value: KeyError naming a missing field,
    TypeError for a value that is not text (`as_text`)."""
    return _RowFormatter().vformat(template, (), {"row": row})


@dataclass(frozen=True)
class PromptParts:
    """A prompt before tokenisation: the prefix, the shots as (prompt, target) pairs and the example's prompt."""

    prefix: str
    shots: tuple[tuple[str, str], ...]
    query: str

    def text(self, shots: int | None = None, target_delimiter: str = " ", delimiter: str = "\n\n") -> str:
        """The plain prompt with the last `shots` shots (all by default)."""
        kept = self.shots[len(self.shots) - (len(self.shots) if shots is None else shots):]
        rendered = "".join(f"{prompt}{target_delimiter}{target}{delimiter}" for prompt, target in kept)
        return self.prefix + rendered + self.query

    def messages(self, shots: int | None = None, system: str | None = None) -> list[dict]:
        """The prompt as chat turns: an optional system turn, a user and an assistant turn per shot, then the
        example's prompt as the last user turn; the prefix opens the first user turn."""
        kept = self.shots[len(self.shots) - (len(self.shots) if shots is None else shots):]
        turns = [{"role": "system", "content": system}] if system else []
        for prompt, target in kept:
            turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}]
        turns.append({"role": "user", "content": self.query})
        first_user = next(t for t in turns if t["role"] == "user")
        first_user["content"] = self.prefix + first_user["content"]
        return turns


@dataclass(frozen=True)
class PromptFormat:
    """How a task's prompt is laid out and truncated (the task config's keys of the same names)."""

    max_tokens: int
    target_delimiter: str = " "
    delimiter: str = "\n\n"
    chat: bool = False
    system: str | None = None
    keep_lead: bool = True  # a decoder-only prompt cut from the left keeps its leading special tokens (BOS)


def prompt_ids(tokenizer, parts: PromptParts, layout: PromptFormat, decoder_only: bool) -> tuple[list[int], int]:
    """The token ids of a prompt and how many shots it kept: as many of the shots nearest the question as
    fit in `layout.max_tokens`, then truncation (see the module docstring)."""
    ids, shots, _ = prompt_tokens(tokenizer, parts, layout, decoder_only)
    return ids, shots


def prompt_tokens(tokenizer, parts: PromptParts, layout: PromptFormat,
                  decoder_only: bool) -> tuple[list[int], int, int]:
    """`prompt_ids`, and how many tokens truncation cut from the prompt without shots (0 when it fit)."""
    ids: list[int] = []
    for shots in range(len(parts.shots), -1, -1):
        ids = _encode(tokenizer, parts, shots, layout, decoder_only)
        if len(ids) <= layout.max_tokens:
            return ids, shots, 0
    kept = _truncate(tokenizer, ids, layout.max_tokens, decoder_only, parts, layout)
    return kept, 0, max(0, len(ids) - len(kept))


def _encode(tokenizer, parts: PromptParts, shots: int, layout: PromptFormat, decoder_only: bool) -> list[int]:
    if layout.chat:
        text = tokenizer.apply_chat_template(parts.messages(shots, layout.system), tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    text = parts.text(shots, layout.target_delimiter, layout.delimiter)
    bos = getattr(tokenizer, "bos_token", None)
    # A decoder-only prompt that opens with the BOS token (an lm-eval prompt rendered by a chat template) gets no
    # second one, as lm-eval's hf model encodes it.
    opens = decoder_only and bool(bos) and text.startswith(bos)
    ids = list(tokenizer(text, add_special_tokens=not opens).input_ids)
    if decoder_only and len(ids) > 0 and ids[-1] == tokenizer.eos_token_id:
        ids.pop()  # tokenizers that close an input with EOS (ByT5, T5): a prompt continues, it does not end
    return ids


def _truncate(tokenizer, ids: list[int], max_tokens: int, decoder_only: bool, parts: PromptParts,
              layout: PromptFormat) -> list[int]:
    if not decoder_only:  # as the tokenizer truncates (T5 keeps its closing EOS)
        return list(tokenizer(parts.text(0, layout.target_delimiter, layout.delimiter), truncation=True,
                              max_length=max_tokens).input_ids)
    if not layout.keep_lead:  # lm-eval's hf model: the last max_tokens tokens of the context, whatever they are
        return ids[len(ids) - max_tokens:]
    special = set(tokenizer.all_special_ids)
    lead = 0
    while lead < len(ids) and ids[lead] in special and lead < max_tokens - 1:  # keep BOS and a template's opening
        lead += 1
    return ids[:lead] + ids[len(ids) - (max_tokens - lead):]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def get_field(row: dict, dotted: str):
    """`row["translation"]["en"]` for `dotted == "translation.en"` (`choices.0`: the first item of a list);
    KeyError if any part is missing."""
    value = row
    for part in dotted.split("."):
        try:
            value = value[int(part)] if isinstance(value, list) and part.isdigit() else value[part]
        except (KeyError, TypeError, IndexError):
            raise KeyError(dotted) from None
    return value
