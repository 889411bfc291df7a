# Our own script (DiffusersSharp): runs diffusers' OWN TextualInversionLoaderMixin (v0.36.0: load_textual_inversion,
# _retrieve_tokens_and_embeddings, _extend_tokens_and_embeddings, maybe_convert_prompt, unload_textual_inversion) to make
# the parity fixture tests/DiffusersSharp.Tests/Fixtures/local-diffusers/textual-inversion (see its README.md).
#   1. writes small embedding files (width 32, the tiny CLIP encoders' hidden size) in the formats users meet: diffusers'
#      ({token: [32]} / [3, 32] / [1, 32], float16 too), kohya / A1111 safetensors ({"emb_params": [2, 32]}), an SDXL pair
#      ({"clip_l": [2, 32], "clip_g": [2, 32]}), a flattened A1111 file (string_to_param.* + string_to_token.*, name in the
#      metadata; diffusers gets A1111's nested .pt dict instead), a two-tensor file and a 33-wide one;
#   2. per case, a fresh stand-in tokenizer (below) and text encoder stand-in, loads as a diffusers user does, and records
#      the added tokens and ids, the new embedding rows, diffusers' conversions of a set of prompts, or the error raised;
#   3. unload cases: unload_textual_inversion of all, of the last-loaded tokens, and of a token loaded before others.
# No transformers or tokenizers package runs here, so two stand-ins implement what diffusers calls on them:
#   - StandInTokenizer: tiny-sd15's CLIP vocabulary; added tokens as transformers 5 (tokenizers backend) adds them with
#     add_tokens(str) (non-special, normalized: matched leftmost-longest in the NFC / whitespace-collapsed / lower-cased
#     text, tokenize() giving the matched normalized text), ids from len(vocab) on; the special tokens matched in the raw
#     text first. Text between added tokens is returned as opaque whitespace-separated pieces (no BPE): diffusers only asks
#     whether a token is an added one. unload_textual_inversion edits a slow tokenizer's _added_tokens_decoder /
#     _added_tokens_encoder, so the stand-in keeps those two dicts. tools/reference/hf_tokenizers checks every prompt's
#     added tokens here against the real tokenizers library (Rust).
#   - StandInEncoder: an nn.Embedding table [49408, 32] drawn from a seeded generator; resize_token_embeddings fills new
#     rows with NaN (transformers draws them at random), so a row diffusers did not write would show.
# Run from the repository root (PYTHONHASHSEED fixed: maybe_convert_prompt walks a Python set; the cases avoid prompts
# where that order matters, and a run with another seed gives the same file):
#   PYTHONHASHSEED=0 PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/textual_inversion.py
import json
import os
import re
import unicodedata

import torch
from safetensors.torch import save_file, load_file
from diffusers.loaders.textual_inversion import TextualInversionLoaderMixin

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/textual-inversion/"
VOCAB = FX + "tiny-sd15/model/tokenizer/vocab.json"
DIM = 32


def normalize(text):
    # CLIP's normalizer in tokenizer.json: NFC, whitespace runs to one space, lower case.
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()


class Tok:
    def __init__(self, content, special, normalized):
        self.content, self.special, self.normalized = content, special, normalized


def split(text, patterns):
    """Leftmost-longest split of text by {pattern: token}: [(piece, token or None)]."""
    out, start, i = [], 0, 0
    while i < len(text):
        best = max((p for p in patterns if text.startswith(p, i)), key=len, default=None)
        if best is None:
            i += 1
            continue
        if i > start:
            out.append((text[start:i], None))
        out.append((best, patterns[best]))
        i = start = i + len(best)
    if start < len(text):
        out.append((text[start:], None))
    return out


class StandInTokenizer:
    def __init__(self):
        with open(VOCAB, encoding="utf-8") as f:
            self.vocab = json.load(f)
        self._added_tokens_decoder = {49406: Tok("<|startoftext|>", True, False), 49407: Tok("<|endoftext|>", True, False)}
        self._added_tokens_encoder = {t.content: i for i, t in self._added_tokens_decoder.items()}

    @property
    def added_tokens_decoder(self):
        return dict(sorted(self._added_tokens_decoder.items(), key=lambda item: item[0]))

    @property
    def added_tokens_encoder(self):
        return {k.content: v for v, k in sorted(self._added_tokens_decoder.items(), key=lambda item: item[0])}

    def get_vocab(self):
        vocab = dict(self.vocab)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def __len__(self):
        return len(self.get_vocab())

    def add_tokens(self, token):
        if token in self.get_vocab():
            return 0
        top = max(self._added_tokens_decoder)
        new_id = top + 1 if top >= len(self.vocab) else len(self.vocab)
        self._added_tokens_decoder[new_id] = Tok(token, False, True)
        self._added_tokens_encoder[token] = new_id
        return 1

    def convert_tokens_to_ids(self, token):
        return self.get_vocab()[token]

    def tokenize(self, text, added_only=False):
        raw = {t.content: t for t in self._added_tokens_decoder.values() if not t.normalized}
        norm = {normalize(t.content): t for t in self._added_tokens_decoder.values() if t.normalized}
        tokens = []
        for piece, tok in split(text, raw):
            if tok is not None:
                tokens.append(piece)
                continue
            for piece2, tok2 in split(normalize(piece), norm):
                if tok2 is not None:
                    tokens.append(piece2)
                elif not added_only:
                    tokens.extend(piece2.split())
        return tokens

    def _update_trie(self):
        pass

    def _update_total_vocab_size(self):
        pass


class StandInEncoder(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator("cpu").manual_seed(seed)
        self.emb = torch.nn.Embedding(49408, DIM)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(49408, DIM, generator=g))
        self.base = self.emb.weight.detach().clone()

    @property
    def device(self):
        return self.emb.weight.device

    @property
    def dtype(self):
        return self.emb.weight.dtype

    def get_input_embeddings(self):
        return self.emb

    def set_input_embeddings(self, emb):
        self.emb = emb

    def resize_token_embeddings(self, n):
        old = self.emb.weight.data
        new = torch.nn.Embedding(n, DIM)
        with torch.no_grad():
            new.weight.fill_(float("nan"))
            k = min(n, old.shape[0])
            new.weight[:k] = old[:k]
        self.emb = new


class Host(TextualInversionLoaderMixin):
    hf_device_map = None
    components = {}

    def __init__(self):
        self.tokenizer, self.text_encoder = StandInTokenizer(), StandInEncoder(1234)
        self.tokenizer_2, self.text_encoder_2 = StandInTokenizer(), StandInEncoder(5678)


def files():
    g = torch.Generator("cpu").manual_seed(20261127)
    r = lambda *shape: torch.randn(*shape, generator=g)
    os.makedirs(OUT + "embeddings", exist_ok=True)
    made = {
        "single.safetensors": {"<cat-toy>": r(DIM)},
        "multi.safetensors": {"<multi>": r(3, DIM)},
        "one_row.safetensors": {"<one-row>": r(1, DIM)},
        "upper.safetensors": {"<Up>": r(2, DIM)},
        "word.safetensors": {"sksdog": r(2, DIM)},
        "half.safetensors": {"<half>": r(2, DIM).half()},
        "emb_params.safetensors": {"emb_params": r(2, DIM)},
        "sdxl.safetensors": {"clip_l": r(2, DIM), "clip_g": r(2, DIM)},
        "two_tensors.safetensors": {"<a>": r(DIM), "<b>": r(DIM)},
        "wide.safetensors": {"<wide>": r(33)},
        "multi_1.safetensors": {"<m>_1": r(DIM)},
        "m.safetensors": {"<m>": r(2, DIM)},
    }
    for name, sd in made.items():
        save_file(sd, OUT + "embeddings/" + name)
    a1111 = r(2, DIM)
    save_file({"string_to_param.*": a1111, "string_to_token.*": torch.tensor([265], dtype=torch.int64)},
              OUT + "embeddings/a1111.safetensors", metadata={"name": "a1111-style"})
    return a1111


PROMPTS = [
    "a photo of <multi>",
    "<multi>, <multi> and <cat-toy>",
    "A <MULTI> in upper case",
    "<Up> style, <up> style",
    "x<multi>y",
    "<multi>_1 alone",
    "<multi> <multi>_1",
    "a sksdog and sksdogs",
    "a   <multi>\tb  <half>",
    "<|endoftext|> <multi>",
    "emb_params <s0> <s1> <s> end",
    "",
]


def record(host, pair="1"):
    tok = host.tokenizer if pair == "1" else host.tokenizer_2
    enc = host.text_encoder if pair == "1" else host.text_encoder_2
    w = enc.get_input_embeddings().weight.detach()
    assert torch.equal(w[:49408], enc.base), "diffusers changed a row of the base vocabulary"
    added = {c: i for c, i in tok.added_tokens_encoder.items() if i >= 49408}
    decoder = {str(i): t.content for i, t in tok.added_tokens_decoder.items() if i >= 49408}
    rows = {str(i): [float(x) for x in w[i]] for i in range(49408, w.shape[0])}
    assert not any(v != v for row in rows.values() for v in row), "a new row was left unwritten"
    return {"added": added, "decoder": decoder, "table_rows": int(w.shape[0]), "rows": rows,
            "added_matches": {p: tok.tokenize(p, added_only=True) for p in PROMPTS},
            "converted": {p: host.maybe_convert_prompt(p, tok) for p in PROMPTS}}


def run(name, steps, pair_record=("1",)):
    host = Host()
    case = {"name": name, "steps": steps}
    try:
        for step in steps:
            if step["op"] == "load":
                src = step["src"]
                if isinstance(src, str):
                    src = OUT + "embeddings/" + src
                elif isinstance(src, list):
                    src = [OUT + "embeddings/" + s for s in src]
                else:  # {"file": F, "key": K}: state_dict[K] as a tensor, or the A1111 nested dict
                    sd = load_file(OUT + "embeddings/" + src["file"])
                    src = sd[src["key"]] if "key" in src else A1111
                kw = {"token": step["token"]} if "token" in step else {}
                if step.get("pair") == "2":
                    kw.update(tokenizer=host.tokenizer_2, text_encoder=host.text_encoder_2)
                host.load_textual_inversion(src, **kw)
            else:
                kw = {"tokens": step["tokens"]} if "tokens" in step else {}
                host.unload_textual_inversion(**kw)
        for pair in pair_record:
            case["result" + ("" if pair == "1" else "_2")] = record(host, pair)
    except Exception as e:  # noqa: BLE001 - the error diffusers raises is the expected value
        case["error"] = {"type": type(e).__name__, "message": str(e)}
    return case


A1111 = None


def main():
    global A1111
    a1111 = files()
    A1111 = {"string_to_param": {"*": a1111}, "name": "a1111-style"}
    cases = [
        run("single", [{"op": "load", "src": "single.safetensors"}]),
        run("multi_and_others", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "multi.safetensors"},
                                 {"op": "load", "src": "one_row.safetensors"}, {"op": "load", "src": "upper.safetensors"},
                                 {"op": "load", "src": "word.safetensors"}, {"op": "load", "src": "half.safetensors"}]),
        run("token_overrides", [{"op": "load", "src": "multi.safetensors", "token": "<renamed>"}]),
        run("list_of_files", [{"op": "load", "src": ["single.safetensors", "multi.safetensors"], "token": ["<x>", "<y>"]}]),
        run("list_of_files_own_tokens", [{"op": "load", "src": ["single.safetensors", "multi.safetensors"]}]),
        run("emb_params_own_key", [{"op": "load", "src": "emb_params.safetensors"}]),
        run("emb_params_token", [{"op": "load", "src": "emb_params.safetensors", "token": "<s>"}]),
        run("a1111", [{"op": "load", "src": {"file": "a1111.safetensors"}}]),
        run("a1111_token", [{"op": "load", "src": {"file": "a1111.safetensors"}, "token": "<kw>"}]),
        run("sdxl_two_tokens", [{"op": "load", "src": {"file": "sdxl.safetensors", "key": "clip_l"}, "token": ["<s0>", "<s1>"]},
                                {"op": "load", "src": {"file": "sdxl.safetensors", "key": "clip_g"}, "token": ["<s0>", "<s1>"], "pair": "2"}],
            pair_record=("1", "2")),
        run("sdxl_one_token", [{"op": "load", "src": {"file": "sdxl.safetensors", "key": "clip_l"}, "token": "<s>"},
                               {"op": "load", "src": {"file": "sdxl.safetensors", "key": "clip_g"}, "token": "<s>", "pair": "2"}],
            pair_record=("1", "2")),
        run("unload_all", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "multi.safetensors"},
                           {"op": "unload"}]),
        run("unload_last", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "multi.safetensors"},
                            {"op": "unload", "tokens": ["<multi>", "<multi>_1", "<multi>_2"]}]),
        run("unload_then_load", [{"op": "load", "src": "multi.safetensors"}, {"op": "unload", "tokens": ["<multi>", "<multi>_1", "<multi>_2"]},
                                 {"op": "load", "src": "single.safetensors"}]),
        # diffusers' renumbering when a token loaded before others goes (its counter only advances after a move):
        run("unload_first", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "multi.safetensors"},
                             {"op": "unload", "tokens": ["<cat-toy>"]}]),
        # ... which gives a kept token the id of another when the first kept one needed no move:
        run("unload_middle", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "multi.safetensors"},
                              {"op": "load", "src": "one_row.safetensors"}, {"op": "unload", "tokens": ["<multi>"]}]),
        # errors
        run("error_token_in_vocab", [{"op": "load", "src": "single.safetensors", "token": "dog</w>"}]),
        run("error_special_in_vocab", [{"op": "load", "src": "single.safetensors", "token": "<|endoftext|>"}]),
        run("error_loaded_twice", [{"op": "load", "src": "single.safetensors"}, {"op": "load", "src": "single.safetensors"}]),
        run("error_multi_vector_in_vocab", [{"op": "load", "src": "multi_1.safetensors"}, {"op": "load", "src": "m.safetensors"}]),
        run("error_width", [{"op": "load", "src": "wide.safetensors"}]),
        run("error_two_tensors", [{"op": "load", "src": "two_tensors.safetensors"}]),
        run("error_sdxl_file_whole", [{"op": "load", "src": "sdxl.safetensors"}]),
        run("error_tensor_without_token", [{"op": "load", "src": {"file": "sdxl.safetensors", "key": "clip_l"}}]),
        run("error_tensor_rows_vs_tokens", [{"op": "load", "src": {"file": "multi.safetensors", "key": "<multi>"}, "token": ["<p>", "<q>"]}]),
        run("error_list_lengths", [{"op": "load", "src": ["single.safetensors", "multi.safetensors"], "token": ["<x>"]}]),
        run("error_duplicate_tokens", [{"op": "load", "src": ["single.safetensors", "multi.safetensors"], "token": ["<x>", "<x>"]}]),
        run("error_unload_unknown", [{"op": "load", "src": "single.safetensors"}, {"op": "unload", "tokens": ["<nope>"]}]),
    ]
    meta = {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__, "dim": DIM,
            "base_rows": 49408, "encoder_seeds": {"1": 1234, "2": 5678}, "prompts": PROMPTS, "cases": cases}
    with open(OUT + "cases.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for c in cases:
        print(c["name"], "error: " + c["error"]["message"][:90] if "error" in c else sorted(c["result"]["added"].items()))


if __name__ == "__main__":
    main()
