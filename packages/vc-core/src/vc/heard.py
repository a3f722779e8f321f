"""Keep a call's LLM context to what the caller heard, when a reply's speech failed.

pipecat's assistant aggregator records the text the LLM produced, whether or not the TTS made
audio of it. When the TTS fails a turn (an error, or a reply it cannot speak: a voice in one
language given a reply in another script), vc plays its apology instead, and the caller never
hears the reply. Left in the context, that unheard reply is what the model copies next turn: a
small model that echoed a garbled transcript once echoes it every turn after (SmolLM2-135M:
24 of 24 replies with the echo in the history, 0 of 32 with the apology there instead), and
each of those replies fails the TTS again. :class:`UnheardReply` puts the apology where the
reply was (the model is not shown it either: vc.llm leaves apologies out of its requests).
"""

from __future__ import annotations

from typing import Any


def _is_text_reply(message: Any) -> bool:
    """An assistant message that is only text (not a tool call, not a provider-specific one)."""
    return (
        isinstance(message, dict)
        and message.get("role") == "assistant"
        and not message.get("tool_calls")
        and isinstance(message.get("content"), (str, list))
    )


def replace_last_reply(context: Any, heard: str) -> bool:
    """Replace the assistant's text reply to the latest user message with ``heard``.

    Only messages after the last user message are looked at (the current turn's); the last
    text reply there is replaced. Returns False where there is none yet (pipecat commits the
    reply when the answer's end frame reaches the aggregator).
    """
    messages = list(context.get_messages())
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return False
        if _is_text_reply(message):
            messages[i] = {"role": "assistant", "content": heard}
            context.set_messages(messages)
            return True
    return False


class UnheardReply:
    """The current turn's reply, to be replaced by the apology once it is in the context.

    ``failed(text)``: the turn's speech failed and ``text`` was played instead; the reply is
    replaced now if the aggregator has committed it, else when it does (``committed``). Where
    the reply never reaches the context (a TTS that raised before any text was spoken), the
    apology is put where the reply would have been before the next request is built from the
    context (``answer_started``), so the context still says what the caller heard.
    """

    def __init__(self, context: Any) -> None:
        self.context = context
        self.pending = ""
        self._at = 0  # where the reply would be: the context's length at the failure

    def failed(self, heard: str) -> None:
        if replace_last_reply(self.context, heard):
            self.pending = ""
        else:
            self.pending, self._at = heard, len(self.context.get_messages())

    def committed(self) -> None:
        if self.pending and replace_last_reply(self.context, self.pending):
            self.pending = ""

    def answer_started(self) -> None:
        if not self.pending:
            return
        messages = list(self.context.get_messages())
        messages.insert(min(self._at, len(messages)), {"role": "assistant", "content": self.pending})
        self.context.set_messages(messages)
        self.pending = ""
