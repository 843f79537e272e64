"""`r1lab chat` driven as a person drives it: the real CLI in a pseudo-terminal, typed lines, read replies.

--show-prompt makes the templated prompt of every turn visible, so the history (and what /reset does to it) is
read off the terminal, not from the code's internals.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny import CHATML

PROMPT = re.compile(r"--- prompt ---\n(.*?)\n--- end of prompt ---\n", re.S)


class Terminal:
    """A child process on a pseudo-terminal: `send` types a line, `expect` reads until a text appears."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r1lab.cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": "dumb", "COLUMNS": "200"},
        )
        os.close(slave)
        self.master, self.seen = master, ""

    def expect(self, text: str, timeout: float = 180) -> str:
        """Everything shown up to and including `text` (consumed); fails with the screen after `timeout`."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                pytest.fail(f"no {text!r} on the terminal; it shows:\n{self.seen}")
            try:
                chunk = os.read(self.master, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                pytest.fail(f"the chat ended before {text!r}; it showed:\n{self.seen}")
            self.seen += chunk.replace("\r\n", "\n")
        head, _, self.seen = self.seen.partition(text)
        return head + text

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        code = self.proc.wait(timeout=60)
        os.close(self.master)
        return code


@pytest.fixture
def terminal():
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(list(args)))
        return started[-1]

    yield start
    for t in started:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()


def _turn(term: Terminal, message: str) -> tuple[str, str]:
    """Type `message`; the prompt the model was given and the reply it streamed."""
    term.expect("you> ")
    term.send(message)
    shown = term.expect("\nyou> ")
    term.seen = "you> " + term.seen  # leave the next prompt for the next turn
    prompts = PROMPT.findall(shown)
    assert len(prompts) == 1, shown
    reply = shown.split("model> ", 1)[1].removesuffix("\nyou> ")
    return prompts[0], reply


def test_chat_turns_history_reset_and_exit(terminal, tiny_model_dir):
    args = ["chat", str(tiny_model_dir), "--temperature", "1.0", "--seed", "0", "--max-new-tokens", "8"]
    term = terminal(*args, "--system", "Be brief.", "--show-prompt")
    first_prompt, first_reply = _turn(term, "What is 12 + 7?")
    # the model's own template (ChatML here), with the system message and a generation prompt
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert first_prompt == expected
    assert first_reply.strip(), "the model's reply is shown"

    second_prompt, _ = _turn(term, "And 3 + 4?")
    # history: the first exchange, with the reply exactly as it was streamed, then the new message
    assert second_prompt.startswith(expected + first_reply + "<|im_end|>\n<|im_start|>user\nAnd 3 + 4?")

    term.expect("you> ")
    term.send("/reset")
    term.expect("(conversation cleared)")
    third_prompt, _ = _turn(term, "Hello!")
    assert third_prompt == expected.replace("What is 12 + 7?", "Hello!")  # no old turns; the system stays
    assert "12 + 7" not in third_prompt and "3 + 4" not in third_prompt

    term.expect("you> ")
    term.send("/exit")
    assert term.close() == 0


def test_chat_without_template_says_so_and_template_file_fixes_it(terminal, tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for file in tiny_model_dir.iterdir():
        if file.name != "chat_template.jinja":
            (bare / file.name).write_bytes(file.read_bytes())
    config = bare / "tokenizer_config.json"
    config.write_text(re.sub(r'"chat_template":\s*".*?",?', "", config.read_text()))
    run = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "chat", str(bare)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2
    assert "has no chat template" in run.stderr and "--template FILE" in run.stderr

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    term = terminal("chat", str(bare), "--template", str(template), "--show-prompt", "--temperature", "0")
    prompt, _ = _turn(term, "hi")
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    term.expect("you> ")
    os.write(term.master, b"\x04")  # Ctrl-D leaves too
    assert term.close() == 0


def test_chat_template_file_missing(tiny_model_dir, tmp_path):
    missing = Path(tmp_path / "nope.jinja")
    run = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "chat", str(tiny_model_dir), "--template", str(missing)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "no template file" in run.stderr and "--template" in run.stderr
