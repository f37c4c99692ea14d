"""Chat messages checked once, torch-free: the chat input kind and the prompt stage both use it."""

from __future__ import annotations

from typing import Any, TypeGuard

from taskhub.errors import BadInputError

ROLES = ("system", "user", "assistant", "tool")
CONTENT = "a string or a list of content parts ({'type': ..., ...} mappings)"


def check_messages(messages: list[Any]) -> None:
    """Reject a message a chat template would render wrongly or crash on: a BadInputError naming the
    message's index, the field and what is allowed (the caller adds which input it was)."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadInputError(f"message {i} is a {type(message).__name__}; expected a {{'role', 'content'}} mapping.")
        role = message.get("role")
        if role not in ROLES:
            raise BadInputError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}.")
        if "content" not in message:
            raise BadInputError(f"message {i} has no 'content'; expected {CONTENT}.")
        content = message["content"]
        if content is None and role == "assistant" and message.get("tool_calls"):
            continue  # an assistant turn that only calls tools (OpenAI's shape)
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadInputError(f"message {i} has content of type {type(content).__name__}; expected {CONTENT}.")
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and isinstance(part.get("type"), str)):
                raise BadInputError(f"message {i} content part {j} is {str(part)[:60]!r}; expected {CONTENT}.")


def is_conversation(value: object) -> TypeGuard[list[Any]]:
    """A non-empty list of {"role", ...} messages: one chat input, not many."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def is_chat_input(value: object) -> bool:
    """The chat input kind's check: a string, a mapping of fields, or a conversation whose messages are valid."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list) and is_conversation(value["messages"]):
        check_messages(value["messages"])
        return True
    if is_conversation(value):
        check_messages(value)
        return True
    return isinstance(value, (str, dict))
