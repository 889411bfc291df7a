# Our own script (DiffusersSharp): writes the small Llama-format tokenizers of the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/llama-tokenizer (see its README.md) and the texts whose ids Hugging
# Face's tokenizers library (Rust) then gives (tools/reference/hf_tokenizers, mode "llama"). No network here, so this is
# NOT Llama's (or AuraFlow's pile-t5) vocabulary: it has the structure of the tokenizer.json transformers' LlamaConverter
# writes, with a vocabulary of our own:
#   1. ids 0-2: <unk> <s> </s> (Llama's order), then the 256 byte pieces <0x00> ... <0xFF> (ids 3-258);
#   2. the characters of the training text below (after " " -> "▁"), minus a few left to byte fallback;
#   3. MERGES merges learned here by plain pair counting (ties broken by the pair's text) over SentencePiece-style pieces
#      ("▁" in front of the word that follows), each adding its concatenation to the vocabulary; merges ("▁", "▁") and
#      ("▁▁", "▁▁") at fixed ranks make whitespace-run pieces as in Llama's vocabulary;
#   4. added tokens after the vocabulary: <pad> (special, the pad token AuraFlow's tokenizer has and Llama's lacks),
#      <extra_id_0>, <extra_id_1> (special, normalized false) and "<sep>" (not special, normalized true).
# Two layouts of the same model (tokenizer-legacy/, tokenizer-metaspace/):
#   legacy:    normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")], pre_tokenizer null (LlamaConverter, legacy = true)
#   metaspace: normalizer null, pre_tokenizer Metaspace("▁", prepend_scheme "first", split false) (legacy = false)
# both with BPE(unk "<unk>", fuse_unk, byte_fallback, merges as "a b" strings), post-processor TemplateProcessing
# <s> $A (pair <s> $A <s> $B), tokenizer_config.json add_bos_token true, add_eos_token false, model_max_length 1e30
# (transformers' "no limit", as AuraFlow's), padding_side "left" (transformers' LlamaTokenizerFast default; AuraFlow's
# pipeline pads on the right, so the batches ask for Right explicitly and one asks for Left).
# cases.json: the test texts and the padded batches. Run from the repository root:
#   /usr/bin/python3 tools/reference/llama_tokenizer.py
import json
import os
from collections import Counter

OUT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/llama-tokenizer/"
MERGES = 250
SP = "\u2581"

TRAINING_TEXT = """A photo of a cat sitting on a wooden table, soft light, high detail. A portrait of a woman in a red dress.
The city at night: neon lights, rain on the street, reflections in the puddles. It's a cinematic photo of the city.
A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill. A bustling
city street scene at dusk, featuring glowing street lamps and a diverse crowd of people in colorful clothing.
Hello world. Two  spaces   and    four    spaces. Café, crème, Zürich, naïve, 日本. In 2025 the photo won 3 prizes.
"""
LEFT_TO_BYTES = {"ü", "本"}
HEAD = ["<unk>", "<s>", "</s>"]
# (content, special, normalized), ids after the vocabulary.
ADDED = [("<pad>", True, False), ("<extra_id_0>", True, False), ("<extra_id_1>", True, False), ("<sep>", False, True)]


def pieces_of(text):
    out = []
    for line in text.split("\n"):
        s = SP + line.replace(" ", SP)
        cur = ""
        for ch in s:
            if ch == SP and cur and cur[-1] != SP:
                out.append(cur)
                cur = ""
            cur += ch
        if cur:
            out.append(cur)
    return out


def learn():
    vocab = {}
    for content in HEAD:
        vocab[content] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    chars = sorted({c for c in SP + TRAINING_TEXT.replace(" ", SP) if c != "\n"} - LEFT_TO_BYTES)
    for c in chars:
        if c not in vocab:
            vocab[c] = len(vocab)
    words = Counter(tuple(p) for p in pieces_of(TRAINING_TEXT))
    words = Counter({w: n for w, n in words.items() if not (set(w) & LEFT_TO_BYTES)})
    merges = []
    forced = [(SP, SP), (SP * 2, SP * 2)]
    for step in range(MERGES):
        if step in (7, 60):
            best = forced.pop(0)
        else:
            pairs = Counter()
            for word, count in words.items():
                for a, b in zip(word, word[1:]):
                    pairs[a, b] += count
            pairs = {p: n for p, n in pairs.items() if p not in forced}
            if not pairs:
                break
            best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = "".join(best)
        if joined not in vocab:
            vocab[joined] = len(vocab)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, merges


def added_token(content, idx, special, normalized):
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main():
    vocab, merges = learn()
    added = [added_token(c, vocab[c], True, False) for c in HEAD]
    for content, special, normalized in ADDED:
        added.append(added_token(content, len(vocab) + len(added) - len(HEAD), special, normalized))
    bos = vocab["<s>"]
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": vocab, "merges": [a + " " + b for a, b in merges]}
    post = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}},
    }
    layouts = {
        "legacy": {
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": SP}, {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
            "pre_tokenizer": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SP}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        },
        "metaspace": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SP}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        },
    }
    for name, layout in layouts.items():
        tok = OUT + "tokenizer-" + name + "/"
        os.makedirs(tok, exist_ok=True)
        write_json(tok + "tokenizer.json", {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": layout["normalizer"], "pre_tokenizer": layout["pre_tokenizer"], "post_processor": post,
            "decoder": layout["decoder"], "model": model})
        write_json(tok + "special_tokens_map.json", {
            "additional_special_tokens": ["<extra_id_0>", "<extra_id_1>"],
            "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
        write_json(tok + "tokenizer_config.json", {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
            "additional_special_tokens": ["<extra_id_0>", "<extra_id_1>"],
            "bos_token": "<s>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "</s>",
            "legacy": name == "legacy",
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<pad>",
            "padding_side": "left",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": "<unk>",
            "use_default_system_prompt": False,
        })

    long_text = " ".join(TRAINING_TEXT.split())
    texts = [
        "A photo of a cat sitting on a wooden table.",
        "a cat sitting on a wooden table",
        "THE CAT AND THE DOG",
        " leading space",
        "  two leading spaces",
        "double  spaces  and   three",
        "trailing space ",
        " ",
        "   ",
        "line one\nline two\n\nend",
        "\n",
        "tab\tseparated\tvalues",
        "Café crème, Zürich, naïve façade",
        "日本の猫",
        "emoji 🐱👍🏽 and ❤️ and 👨‍👩‍👧",
        "Hello <s>.",
        "Hello <s> world</s>",
        "<s>starts with bos",
        "a<unk>b <pad> c</s>",
        "<extra_id_0> fill <extra_id_1>in",
        "x <sep> y<sep>z",
        "\u2581already\u2581has\u2581metaspace",
        "In 2025, 3 cats won 12 prizes.",
        long_text,
        "",
    ]
    cases = {
        "texts": texts,
        "batches": [
            {"name": "auraflow256", "max_length": 256, "direction": "Right", "post": "bos",
             "texts": ["A photo of a cat sitting on a wooden table.", " ".join([long_text] * 3), "", "<extra_id_0> a cat"]},
            {"name": "auraflow256_eos", "max_length": 256, "direction": "Right", "post": "bos_eos",
             "texts": ["A photo of a cat sitting on a wooden table.", " ".join([long_text] * 3), ""]},
            {"name": "right16", "max_length": 16, "direction": "Right", "post": "bos",
             "texts": ["A photo of a cat sitting on a wooden table.", long_text, "", "cat", "Hello <s> world"]},
            {"name": "left16", "max_length": 16, "direction": "Left", "post": "bos",
             "texts": ["A photo of a cat sitting on a wooden table.", long_text, "", "cat"]},
        ],
    }
    write_json(OUT + "cases.json", cases)
    print(f"{len(vocab)} pieces + {len(ADDED)} added, {len(merges)} merges, {len(texts)} texts")


if __name__ == "__main__":
    main()
