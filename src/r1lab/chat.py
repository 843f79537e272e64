"""`r1lab chat`: talk to a model in the terminal through its own chat template, with history and `/reset`.

Each turn renders the whole conversation (system, earlier turns, the new message) with the chat template and
generation prompt, samples a reply (streamed token by token to the terminal) and keeps it in the history.
`/reset` forgets the turns (the --system message stays), `/exit` (or Ctrl-D) leaves with status 0, Ctrl-C during
a reply stops that reply only. --show-prompt prints the exact text the model is given, so what the template and
history produce can be seen.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from r1lab.config import ModelConfig
from r1lab.errors import UserError

HELP = "type a message; /reset forgets the conversation, /exit leaves (Ctrl-D too), Ctrl-C stops a reply"


@dataclass
class Sampling:
    temperature: float = 0.7  # 0: greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None


@dataclass
class Conversation:
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.turns, {"role": "user", "content": user}]


def load_chat_model(model: str, template: Path | None) -> tuple[Any, Any]:
    """Model and tokenizer, with `template` (a Jinja file) as the chat template; a clear error if none exists."""
    from r1lab.models.load import load_model

    if template is not None and not template.is_file():
        raise UserError(f"no template file {str(template)!r}", where="--template", fix="give a Jinja file")
    cfg = ModelConfig(path=model, chat_template=str(template) if template else None)
    lm, tokenizer = load_model(cfg, trainable=False)
    if not tokenizer.chat_template:
        raise UserError(
            f"model {model!r} has no chat template, so r1lab cannot tell how to lay out a conversation",
            where=model,
            fix="give one with --template FILE (a Jinja chat template, e.g. the ChatML one of the model family)",
        )
    return lm, tokenizer


def reply(lm: Any, tokenizer: Any, prompt: str, sampling: Sampling, out: TextIO) -> str:
    """Sample a reply to `prompt` (already templated), streaming its text to `out`; returns the text."""
    import torch
    from transformers import TextStreamer

    class Streamer(TextStreamer):  # writes to `out` (not print) and keeps the reply's text
        text = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.text += text
            out.write(text)
            out.flush()

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    greedy = sampling.temperature <= 0
    kwargs = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    try:
        with torch.no_grad():
            lm.generate(
                **ids,
                do_sample=not greedy,
                max_new_tokens=sampling.max_new_tokens,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
                **kwargs,
            )
    except KeyboardInterrupt:
        out.write(" [stopped]")
    out.write("\n")
    out.flush()
    return streamer.text


def chat(
    model: str,
    *,
    template: Path | None = None,
    system: str | None = None,
    sampling: Sampling | None = None,
    show_prompt: bool = False,
) -> None:
    """The read-reply loop on stdin/stdout; returns on /exit or end of input (Ctrl-D)."""
    lm, tokenizer = load_chat_model(model, template)
    sampling = sampling or Sampling()
    conversation = Conversation(system=system)
    out = sys.stdout
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    print(f"chatting with {model}; {HELP}")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            conversation.turns.clear()
            print("(conversation cleared)")
            continue
        if not text:
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; {HELP}")
            continue
        prompt = tokenizer.apply_chat_template(
            conversation.messages(text), tokenize=False, add_generation_prompt=True
        )
        if show_prompt:
            print(f"--- prompt ---\n{prompt}\n--- end of prompt ---")
        out.write("model> ")
        answer = reply(lm, tokenizer, prompt, sampling, out)
        conversation.turns += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
