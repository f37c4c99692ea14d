"""text-generation inputs: a string or chat messages -> prompt token ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskhub import StageContext
from taskhub.errors import BadInputError

from .loading import TextGenModel
from .messages import check_messages, is_conversation
from .params import PromptParams

EXPECTED = 'a string, a list of {"role", "content"} messages, or {"messages": [...]} / {"text": str}'


@dataclass
class Prompt:
    """One prompt ready for decoding."""

    ids: list[int]
    source: str | list[dict[str, Any]]  # the caller's text, or the chat messages
    response_format: Any = None  # this input's own structured-output format (response_format_field)

    def __len__(self) -> int:
        return len(self.ids)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def messages_of(item: Any, index: int, extra_field: str | None = None) -> str | list[dict[str, Any]]:
    """The text or the message list inside one input, or a BadInputError naming what is wrong.

    `extra_field` may sit beside "text" / "messages" (it is read by the caller).
    """
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k != extra_field}
        if set(item) == {"messages"}:
            item = item["messages"]
        elif set(item) == {"text"}:
            item = item["text"]
        else:
            raise BadInputError(f"Input {index} has fields {sorted(item)}; expected {EXPECTED}.")
    if isinstance(item, str):
        return item
    if is_conversation(item):
        try:
            check_messages(item)
        except BadInputError as exc:
            raise BadInputError(f"Input {index}: {exc}") from None
        return item
    raise BadInputError(f"Input {index} is not a prompt; expected {EXPECTED}.")


def encode_prompt(model: TextGenModel, source: str | list[dict[str, Any]], params: PromptParams) -> list[int]:
    """Token ids: the chat template applied to messages, or the tokenizer on prefix + text."""
    tokenizer = model.tokenizer
    if isinstance(source, str):
        kwargs = {} if params.add_special_tokens is None else {"add_special_tokens": params.add_special_tokens}
        return list(tokenizer(params.prefix + source, **kwargs)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise BadInputError("This model's tokenizer has no chat template; pass the prompt as a string.")
    text = tokenizer.apply_chat_template(
        source,
        tokenize=False,
        add_generation_prompt=not params.continue_final_message,
        continue_final_message=params.continue_final_message,
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prepare_prompt(items: list[Any], params: PromptParams, ctx: StageContext) -> list[Prompt]:
    """Stage `textgen.prepare_prompt`."""
    out = []
    field = params.response_format_field
    for index, item in enumerate(items):
        source = messages_of(item, index, field)
        ids = encode_prompt(ctx.model, source, params)
        if not ids:
            raise BadInputError(f"Input {index} tokenizes to nothing; give a non-empty prompt.")
        own_format = item.get(field) if field and isinstance(item, dict) else None
        out.append(Prompt(ids, source, own_format))
    return out
