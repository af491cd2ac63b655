"""Chat messages as data files carry them: the conversational rows of TRL's dataset formats
(lists of `{"role", "content"}` messages), checked against the chat template's roles.

Used by the SFT rows (`messages`, conversational `prompt`/`completion`) and the preference rows
(conversational `prompt`/`chosen`/`rejected`). The roles are the template's (`ROLES`), so a
role the template learns is accepted here with no change. Fields other than `role` and `content`
(`name`, `tool_call_id`, ...) are dropped: the template renders only these two.
"""

from __future__ import annotations

from typing import Any

from lmlab.data.tokenizer import ROLES, Message


def check_messages(value: Any, where: str, what: str, error: type[ValueError]) -> list[Message]:
    """`value` as a non-empty list of chat messages, or `error` saying what is wrong with the
    field `what` at `where` (a `file:line`)."""
    if not isinstance(value, list) or not value:
        raise error(f'{where}: "{what}" must be a non-empty list of messages')
    messages: list[Message] = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise error(f'{where}: {what}[{i}] needs string "role" and "content" fields')
        if m["role"] not in ROLES:
            raise error(
                f"{where}: {what}[{i}] has unknown role {m['role']!r}; use {', '.join(ROLES)}"
            )
        messages.append({"role": m["role"], "content": m["content"]})
    return messages
