"""What the encode_prompt reference scripts (sana_prompt.py, lumina2_prompt.py, auraflow_prompt.py) share: stand-ins that
answer diffusers' tokenizer and text-encoder calls only from Hugging Face's tokenizers library (tools/reference/
hf_tokenizers, mode gemma-requests) and from transformers' own model run in a child process, recording what they were
asked and raising Missing until the tool / the child have answered; and the rounds that run every case until all do.
"""
import json
import subprocess

import torch


class Missing(Exception):
    """A stand-in was asked something nobody has answered yet (it has been recorded)."""


def key(ids, mask):
    return (tuple(ids.shape), tuple(ids.flatten().tolist()), tuple(mask.flatten().tolist()))


class TokenizerAnswers:
    """The tokenizers library's answers for one tokenizer.json: each text's encoding (post-processor included) and
    padded, truncated batches (the library's padding, on the side the request names; right when it names none)."""

    def __init__(self, tokenizer_dir, scratch):
        self.tokenizer_dir, self.scratch = tokenizer_dir, scratch
        self.encoded, self.rows = {}, {}
        self.want_encode, self.want_batches = [], []
        self.answers = {"encode": [], "batches": []}

    def encoding(self, text):
        if text not in self.encoded:
            if text not in self.want_encode:
                self.want_encode.append(text)
            raise Missing(f"encode({text[:40]!r})")
        return list(self.encoded[text])

    def encodings(self, texts):
        missing = [t for t in texts if t not in self.encoded]
        for t in missing:
            if t not in self.want_encode:
                self.want_encode.append(t)
        if missing:
            raise Missing(f"encode of {len(missing)} texts")
        return [list(self.encoded[t]) for t in texts]

    def batch(self, texts, max_length, direction=None):
        """(input_ids, attention_mask) int64 tensors, as tokenizer(texts, padding="max_length", max_length, truncation=True)."""
        if any((t, max_length) not in self.rows for t in texts):
            request = {"texts": list(texts), "max_length": max_length}
            if direction is not None:
                request["direction"] = direction
            if request not in self.want_batches:
                self.want_batches.append(request)
            raise Missing(f"batch of {len(texts)} at {max_length}")
        ids = torch.tensor([self.rows[(t, max_length)][0] for t in texts], dtype=torch.int64)
        mask = torch.tensor([self.rows[(t, max_length)][1] for t in texts], dtype=torch.int64)
        return ids, mask

    @property
    def wanted(self):
        return bool(self.want_encode or self.want_batches)

    def answer(self):
        # Every request so far goes to the tool each time, so the last answers file holds all the fixture used.
        done = [{k: b[k] for k in ("texts", "max_length", "direction") if k in b} for b in self.answers["batches"]]
        requests = {"encode": list(self.encoded) + [t for t in self.want_encode if t not in self.encoded],
                    "batches": done + self.want_batches}
        with open(f"{self.scratch}/requests.json", "w", encoding="utf-8") as f:
            json.dump(requests, f, ensure_ascii=False)
        subprocess.run(["dotnet", "run", "--project", "tools/reference/hf_tokenizers", "-c", "Release", "--", "gemma-requests",
                        self.tokenizer_dir, f"{self.scratch}/requests.json", f"{self.scratch}/answers.json"], check=True)
        with open(f"{self.scratch}/answers.json", encoding="utf-8") as f:
            self.answers = json.load(f)
        self.encoded = {e["text"]: e["ids"] for e in self.answers["encode"]}
        for b in self.answers["batches"]:
            for t, ids, mask in zip(b["texts"], b["input_ids"], b["attention_mask"]):
                self.rows[(t, b["max_length"])] = (ids, mask)
        self.want_encode, self.want_batches = [], []


class Replay:
    """A model's outputs for exactly the (ids, mask) pairs a child process ran: run_child(pairs) -> outputs."""

    def __init__(self, run_child):
        self.run_child = run_child
        self.outputs, self.pending = {}, {}

    def output(self, input_ids, attention_mask):
        k = key(input_ids, attention_mask)
        if k not in self.outputs:
            self.pending.setdefault(k, (input_ids.clone(), attention_mask.clone()))
            raise Missing(f"text encoder on {list(input_ids.shape)}")
        return self.outputs[k]

    @property
    def wanted(self):
        return bool(self.pending)

    def answer(self):
        pairs = list(self.pending.items())
        for (k, _), out in zip(pairs, self.run_child([p for _, p in pairs])):
            self.outputs[k] = out
        self.pending = {}


def run_rounds(cases, run_case, answerers, names, rounds=8, before_round=None):
    """Runs every case (run_case(args) -> encode_prompt's tuple) until none raises Missing, having the answerers (in order)
    answer what was recorded between rounds (before_round() first in each); returns {CASE/NAME: tensor}."""
    for round in range(rounds):
        if before_round is not None:
            before_round()
        out, missing = {}, []
        for name, args in cases.items():
            try:
                result = run_case(args)
            except Missing as e:
                missing.append(f"{name}: {e}")
                continue
            for n, t in zip(names, result):
                if t is not None:
                    out[f"{name}/{n}"] = t.contiguous()
        print(f"round {round}: {len(cases) - len(missing)} of {len(cases)} cases ran; missing {missing}")
        if not missing:
            return out
        for answerer in answerers:
            if answerer.wanted:
                answerer.answer()
    raise RuntimeError("the stand-ins never answered every request")
