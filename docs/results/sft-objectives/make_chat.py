"""Write chat_held_out.jsonl: the base model's own greedy replies to 80 general prompts (none about arithmetic).

The perplexity suite scores every checkpoint on these replies, so a rise in NLL is drift away from what the base
model would say: a forgetting measure that needs no outside data. Run once from the repository root:
    .venv/bin/python docs/results/sft-objectives/make_chat.py
"""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


TOPICS = [
    "a rainbow", "photosynthesis", "a volcano", "the moon", "a library", "a bicycle", "coffee", "the ocean",
    "a honeybee", "winter", "a compass", "bread", "a violin", "the internet", "a glacier", "chess", "a lighthouse",
    "recycling", "a thunderstorm", "a passport", "an umbrella", "a museum", "sleep", "a river delta", "a kite",
    "a vaccine", "the Roman Empire", "a telescope", "friendship", "a desert", "cheese", "a bridge", "a penguin",
    "a map", "electricity", "a garden", "a poem", "a train station", "yoga", "a fossil",
]
TEMPLATES = ["Explain what {} is in two sentences.", "Write a short, friendly paragraph about {}."]
OUT = Path(__file__).with_name("chat_held_out.jsonl")


def main() -> None:
    path = Path.home() / ".cache/r1lab/models/smollm2-135m-instruct"
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [t.format(topic) for t in TEMPLATES for topic in TOPICS]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=96, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    with OUT.open("w") as f:
        for prompt, reply in zip(prompts, replies):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply.strip()}]
            f.write(json.dumps({"messages": messages}) + "\n")
    print(f"wrote {len(prompts)} conversations to {OUT}")


if __name__ == "__main__":
    main()
