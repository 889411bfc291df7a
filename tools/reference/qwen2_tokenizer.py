# Our own script (DiffusersSharp): writes the small Qwen2-format tokenizer of the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen3 (see its README.md) and the strings whose ids Hugging Face's
# tokenizers library (Rust) then gives (tools/reference/hf_tokenizers, mode "qwen2").
#   1. byte-level BPE: GPT-2's 256 byte characters (ids 0-255 in GPT-2's order, as Qwen2's vocab.json starts) and 400
#      merges learned here, by plain pair counting, from the text below split with Qwen2's pre-tokenizer pattern (ties
#      broken by the pair's text; this is our data, not Qwen's merges: no network here);
#   2. Qwen3's 26 added tokens (<|endoftext|> ... </think>, special or not as Qwen3's tokenizer_config.json has them),
#      numbered after the BPE vocabulary in Qwen3's order;
#   3. tokenizer.json with Qwen2's structure (NFC normalizer; Split with Qwen2's pattern, "Isolated", then ByteLevel
#      without its regex; ByteLevel post-processor and decoder; BPE without unk / dropout / suffixes), vocab.json +
#      merges.txt (the same model in the slow tokenizer's files) and tokenizer_config.json (pad <|endoftext|>, eos
#      <|im_end|>, no bos, added_tokens_decoder; no chat_template: Qwen3's Jinja template is not available here);
#   4. cases.json: the tokenizer test strings, the prompts the prompt-encoder cases give diffusers' _encode_prompt, and
#      each prompt rendered as Qwen3's chat template renders one user message with add_generation_prompt=True and
#      enable_thinking True / False (written from the Qwen3 template as published: '<|im_start|>user\n' + content +
#      '<|im_end|>\n<|im_start|>assistant\n', plus '<think>\n\n</think>\n\n' when thinking is off).
# Run from the repository root:  /usr/bin/python3 tools/reference/qwen2_tokenizer.py
import json
import os
from collections import Counter

import regex

OUT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen3/"
TOK = OUT + "tokenizer/"
MERGES = 400
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

TRAINING_TEXT = """
A photo of a cat sitting on a wooden table, soft light, high detail. A portrait of a woman in a red dress.
The city at night: neon lights, rain on the street, reflections in the puddles. It's a cinematic photo.
We're walking through the forest; they've seen the mountains and I'm sure you'll like the lake. He'd said she's there.
A poster for the project "Z-Image Turbo", with a vintage steam train that turns into a giant zipper pulling open
the thick winter snow to show a lively spring. The text on the poster reads: Z-IMAGE. The train is red and black.
Photorealistic, ultra detailed, 8k, sharp focus, bokeh, golden hour, studio lighting, wide angle, close-up shot.
Café au lait, crème brûlée, naïve façade, Zürich, São Paulo, Kraków, Ångström, señor, garçon.
一幅为名为“造相”的项目设计的创意海报。画面巧妙地将文字概念视觉化：一辆复古蒸汽小火车化身为巨大的拉链头。
日本語のテキスト、東京の夜景、桜の花、富士山の写真。中文测试，图像生成，高清照片，电影感光线。
def main():\n    print("hello world")\n    return 0\n
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun. The cat and the dog are friends.
In 2025 the photo won 3 prizes; the lens was 35mm and the aperture f/1.8. Numbers: 1234567890.
"""


def bytes_to_unicode():
    # GPT-2's table (byte-level BPE): printable bytes map to themselves, the others to U+0100 onwards.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE = bytes_to_unicode()


def learn():
    words = Counter()
    for piece in regex.findall(PATTERN, TRAINING_TEXT * 3):
        words[tuple(BYTE[b] for b in piece.encode("utf-8"))] += 1
    vocab = {c: i for i, c in enumerate(BYTE[b] for b in BYTE)}  # dict order: GPT-2's byte order
    merges = []
    for _ in range(MERGES):
        pairs = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab["".join(best)] = len(vocab)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, merges


# Qwen3's added tokens, in id order, with tokenizer_config.json's "special" flag.
ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]

# Tokenizer test strings: unicode, digits (one per token), contractions (upper case too, and 'ſ, whose case folds to s),
# newlines and space runs, emoji, NFC-composed and decomposed forms, astral letters and digits, special tokens.
TEST_STRINGS = [
    "A photo of a cat",
    "",
    "Hello, world! It's a dog's life; we're here, they've gone, I'm sure, you'll see, he'd go.",
    "IT'S WE'RE THEY'VE I'M YOU'LL HE'D DON'T 'ſ 'Ll ’s x'sy 'x",
    "1234567 and 3.14159, 2025年12月, ١٢٣ ⅣⅫ ½ ²³ 𝟎𝟏𝟐",
    "line one\nline two\r\n\nline three\n\n\n  indented   three spaces\t\ttabs  \n",
    "end   ",
    "   leading and trailing   ",
    "a  b   c\u00a0d\u3000e \u2028f",
    "x \n\n y\r\rz \r\n ",
    "Café naïve façade — “quotes” «guillemets» Ünïcödé Ångström",
    "Cafe\u0301 A\u030a \u212b \ufb01 \u00bd",
    # NFC: Hangul jamo, marks in either order (canonical reordering), a non-starter decomposition, an excluded
    # composition, a singleton, marks on a non-letter.
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab Tie\u0302\u0301ng Vie\u0323\u0302t Vie\u0302\u0323t \u0344 \u0958 \u2126 1\u0301 \u0301x",
    "日本語のテキスト、中文测试。一辆复古蒸汽小火车",
    "Ελληνικά Русский עברית العربية हिन्दी ภาษาไทย",
    "𝐀𝐁𝐂 𝒜𝓁𝓅𝒽𝒶 𠀀𠀁 a𝐀b",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇯🇵!! ✨✨",
    "def f(x):\n    return x**2  # square\n\tpass",
    "(hello) [world] {json: \"yes\"} <tag> &amp; $100 #1 @user ~~~ ... !!! ???",
    "<|im_start|>user\nA photo of a cat<|im_end|>\n<|im_start|>assistant\n",
    "<think>\n\n</think>\n\n",
    "text<|endoftext|>more<|endoftext|><|endoftext|>",
    "<|im_start <|im_end|x <think> <tool_call>call</tool_call> <|fim_prefix|>",
    "A PHOTO OF 3 CATS, cinematic lighting, 8k, ultra-detailed; Z-Image-Turbo!",
]

# Prompts given to diffusers' _encode_prompt (the empty one is the negative prompt diffusers uses under CFG).
ENCODE_PROMPTS = [
    "A photo of a cat sitting on a wooden table, soft light.",
    "",
    "一幅为名为“造相”的项目设计的创意海报 😀 It's 2025!",
]


def chat_template(content, enable_thinking=True):
    # Qwen3's template for one user message, add_generation_prompt=True.
    text = "<|im_start|>user\n" + content + "<|im_end|>\n" + "<|im_start|>assistant\n"
    if not enable_thinking:
        text += "<think>\n\n</think>\n\n"
    return text


def dump(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def main():
    os.makedirs(TOK, exist_ok=True)
    vocab, merges = learn()
    base = len(vocab)
    added = [
        {"id": base + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": s}
        for i, (c, s) in enumerate(ADDED)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [a + " " + b for a, b in merges],
        },
    }
    dump(TOK + "tokenizer.json", tokenizer)
    dump(TOK + "vocab.json", vocab)
    with open(TOK + "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n" + "".join(a + " " + b + "\n" for a, b in merges))
    dump(TOK + "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added
        },
        "additional_special_tokens": [c for c, s in ADDED[1:14]],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    dump(OUT + "cases.json", {
        "strings": TEST_STRINGS,
        "encode_prompts": ENCODE_PROMPTS,
        "chat_template": {p: chat_template(p) for p in ENCODE_PROMPTS + ["A photo of a cat"]},
        "chat_template_no_thinking": {p: chat_template(p, False) for p in ENCODE_PROMPTS + ["A photo of a cat"]},
    })
    print(f"{base} BPE tokens ({len(merges)} merges) + {len(added)} added tokens")


main()
