# Our own script (DiffusersSharp): writes the small Gemma-format tokenizer of the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/gemma-tokenizer (see its README.md) and the texts whose ids Hugging
# Face's tokenizers library (Rust) then gives (tools/reference/hf_tokenizers, mode "gemma"). No network here, so this is
# NOT Gemma's vocabulary: it has the structure of gemma-2-2b-it's tokenizer.json (what transformers' GemmaConverter
# builds) with a vocabulary of our own:
#   1. ids 0-17: Gemma's first pieces in Gemma's order (<pad> <eos> <bos> <unk>, <mask>, [multimodal], a few <unusedN>,
#      <start_of_turn> <end_of_turn>) and some of its user-defined pieces (newline runs, whitespace runs, HTML tags);
#      all are added tokens with normalized false, special only for the control tokens and the two turn tokens (as
#      GemmaConverter marks them);
#   2. the 256 byte pieces <0x00> ... <0xFF>, <0x09> written as "\t" (GemmaConverter's tab fix);
#   3. the characters of the training text below (after Replace(" ", "▁")), minus a few left to byte fallback;
#   4. MERGES merges learned here by plain pair counting (ties broken by the pair's text) over SentencePiece-style
#      pieces ("▁" runs stay in front of the word that follows), each adding its concatenation to the vocabulary;
#      merges ("▁", "▁") and ("▁▁", "▁▁") make the whitespace-run pieces reachable as in Gemma's merges;
#   5. one piece, "qx", that no merge produces (shows ignore_merges).
# tokenizer.json: normalizer Replace(" " -> "▁"), pre_tokenizer null, BPE(unk "<unk>", fuse_unk, byte_fallback,
# ignore_merges false, merges as "a b" strings), post-processor TemplateProcessing <bos> $A (pair <bos> $A <bos> $B),
# decoder Replace("▁" -> " ") + ByteFallback + Fuse. tokenizer_config.json as Gemma's (add_bos_token true,
# add_eos_token false, added_tokens_decoder, additional_special_tokens the turn tokens) with model_max_length 8192 and
# padding_side "left" (so that the tests show the pipeline's padding_side = "right" override matters).
# cases.json: the test texts, the padded batches, and Sana's complex_human_instruction (diffusers v0.39.0
# pipeline_sana.py) with prompts as _text_preprocessing(clean_caption=False) leaves them (lower().strip()).
# Run from the repository root:  /usr/bin/python3 tools/reference/gemma_tokenizer.py
import json
import os
from collections import Counter

OUT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/gemma-tokenizer/"
TOK = OUT + "tokenizer/"
MERGES = 300
SP = "\u2581"

TRAINING_TEXT = """A photo of a cat sitting on a wooden table, soft light, high detail. A portrait of a woman in a red dress.
The city at night: neon lights, rain on the street, reflections in the puddles. It's a cinematic photo of the city.
Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image
generation. Evaluate the level of detail in the user prompt: if the prompt is simple, focus on adding specifics about
colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes. A small, fluffy white
cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill. A bustling city street scene at dusk.
Please generate only the enhanced description for the prompt below. User Prompt: the quick brown fox jumps over
the lazy dog.  Two  spaces   and    four    spaces. Café, crème, Zürich, naïve, 日本. In 2025 the photo won 3 prizes.
"""

# Gemma's first pieces (ids 0..), then some of its user-defined pieces; (content, special).
HEAD = [("<pad>", True), ("<eos>", True), ("<bos>", True), ("<unk>", True), ("<mask>", True), ("[multimodal]", False),
        ("<unused0>", False), ("<unused1>", False), ("<unused2>", False), ("<unused3>", False),
        ("<start_of_turn>", True), ("<end_of_turn>", True), ("\n", False), ("\n\n", False), ("\n\n\n", False),
        (SP * 2, False), (SP * 4, False), ("<table>", False), ("<h1>", False), ("</h1>", False)]
# Characters of the training text left out of the vocabulary: byte fallback writes them as <0xXX> pieces.
LEFT_TO_BYTES = {"ü", "本"}


def pieces_of(text):
    # SentencePiece-style pieces of normalized text: a run of "▁" stays with the word after it.
    out = []
    for line in text.split("\n"):
        s = line.replace(" ", SP)
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
    for content, _ in HEAD:
        vocab[content] = len(vocab)
    for b in range(256):
        vocab["\t" if b == 9 else "<0x%02X>" % b] = len(vocab)
    chars = sorted({c for c in TRAINING_TEXT.replace(" ", SP) if c != "\n"} - LEFT_TO_BYTES)
    for c in chars:
        if c not in vocab:
            vocab[c] = len(vocab)
    words = Counter(tuple(p) for p in pieces_of(TRAINING_TEXT * 2))
    words = Counter({w: n for w, n in words.items() if not (set(w) & LEFT_TO_BYTES)})
    merges = []
    forced = [(SP, SP), (SP * 2, SP * 2)]
    for step in range(MERGES):
        if step in (5, 40):  # the whitespace-run merges, at fixed ranks
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
    vocab["qx"] = len(vocab)
    for c in "qx":
        assert c in vocab
    return vocab, merges


def added_token(content, idx, special):
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def main():
    os.makedirs(TOK, exist_ok=True)
    vocab, merges = learn()
    bos = vocab["<bos>"]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(c, i, s) for i, (c, s) in enumerate(HEAD)],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SP},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<bos>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos], "tokens": ["<bos>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    with open(TOK + "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=2)
        f.write("\n")
    special_map = {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
                   "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {k: v for k, v in added_token(c, i, s).items() if k != "id"}
                                 for i, (c, s) in enumerate(HEAD)},
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": 8192,
        "pad_token": "<pad>",
        "padding_side": "left",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    for name, obj in (("special_tokens_map.json", special_map), ("tokenizer_config.json", config)):
        with open(TOK + name, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=2)
            f.write("\n")

    long_text = " ".join(TRAINING_TEXT.split())
    texts = [
        "A photo of a cat sitting on a wooden table.",
        "a cat sitting on a wooden table",
        "THE CAT AND THE DOG",
        " leading space",
        "double  spaces  and   three",
        "trailing space ",
        "   ",
        " ",
        "line one\nline two\n\nline three\n\n\n\nend",
        "\n",
        "tab\tseparated\tvalues\t",
        "windows\r\nline",
        "Café crème, Zürich, naïve façade",
        "日本の猫",
        "emoji 🐱👍🏽 and ❤️ and 👨‍👩‍👧",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 text",
        "<start_of_turn>user\nA cat<end_of_turn>\n<start_of_turn>model\n",
        "a<bos>b<eos>c <pad> <unk> <mask> [multimodal]",
        "<table><h1>title</h1>",
        "<start_of_turn <end_of_turn>> <unused3>",
        "\u2581already\u2581has\u2581metaspace",
        "\u2581\u2581 raw runs \u2581\u2581\u2581\u2581\u2581",
        "qx",
        "the qx cat",
        "In 2025, 3 cats won 12 prizes.",
        long_text,
        "",
    ]
    chi = [
        "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
        "User Prompt: ",
    ]
    sana_prompts = [p.lower().strip() for p in [
        "A photo of a cat sitting on a wooden table.",
        "  A Neon City at Night  ",
        " ".join([long_text] * 2),
    ]]
    cases = {
        "texts": texts,
        "batches": [
            {"name": "right16", "max_length": 16, "direction": "Right",
             "texts": ["A photo of a cat sitting on a wooden table.", long_text, "", "cat", "<start_of_turn>user\nhi"]},
            {"name": "left16", "max_length": 16, "direction": "Left",
             "texts": ["A photo of a cat sitting on a wooden table.", long_text, "", "cat"]},
            {"name": "right1", "max_length": 1, "direction": "Right", "texts": ["a cat", ""]},
        ],
        "sana": {"complex_human_instruction": chi, "max_sequence_length": 300, "prompts": sana_prompts,
                 "no_instruction_prompts": sana_prompts},
    }
    with open(OUT + "cases.json", "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"{len(vocab)} pieces, {len(merges)} merges, {len(texts)} texts")


if __name__ == "__main__":
    main()
