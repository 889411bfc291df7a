using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>Which tokenizer and text encoder of a pipeline a textual inversion goes into.</summary>
public enum TextualInversionTarget
{
    /// <summary>diffusers' default, <c>tokenizer</c> / <c>text_encoder</c> (CLIP-L for SD 1.x, SDXL and Flux; OpenCLIP-H for SD 2.x).</summary>
    TextEncoder,

    /// <summary>SDXL's <c>tokenizer_2</c> / <c>text_encoder_2</c> (OpenCLIP-G), as diffusers'
    /// <c>load_textual_inversion(..., tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2)</c>.</summary>
    TextEncoder2,
}

/// <summary>
/// Textual inversion embeddings as diffusers' <c>TextualInversionLoaderMixin</c> (v0.36) loads them into a CLIP tokenizer
/// and text encoder: each embedding becomes a new token (a multi-vector one [n, dim] becomes <c>tok</c>, <c>tok_1</c> ...
/// <c>tok_{n-1}</c>) whose row is appended to the token embedding table, and prompts are rewritten by
/// <see cref="MaybeConvertPrompt(string, CLIPTokenizer)"/> so that <c>tok</c> stands for all its vectors.
/// </summary>
/// <remarks>
/// Files are read as safetensors only (pickled <c>.bin</c> / <c>.pt</c> files are refused): diffusers' format
/// (one tensor, named by its token: <c>{"&lt;cat-toy&gt;": [768]}</c> or [n, 768]), A1111 / kohya files (one tensor,
/// usually <c>emb_params</c>, taken as diffusers takes any single tensor, so give a token; or A1111's
/// <c>string_to_param.*</c> flattened, named by the token or the file's <c>name</c> metadata), and SDXL files with
/// <c>clip_l</c> / <c>clip_g</c> (pick one with <c>key</c> and load it into its encoder with a token, as diffusers users do
/// with <c>state_dict["clip_g"]</c>). The token is the given one, else the file's key (diffusers' rule). Checks (every one
/// before anything changes) and their messages follow diffusers: a token already in the vocabulary, <c>tok_1</c> already
/// there for a multi-vector token, an embedding whose width is not the encoder's, several embeddings in one tensor
/// without a token for each, token lists of the wrong length or with duplicates. Beyond diffusers, a token list that
/// names one token twice, or a generated <c>tok_i</c> already in the vocabulary, is refused (diffusers would overwrite a
/// row), as are tensors that are not [dim] or [n, dim]. New rows take the encoder's dtype and device.
/// Added tokens are matched as the tokenizers library matches tokens added with <c>add_tokens</c> (transformers 5's CLIP
/// tokenizer): in the normalised text, so in any case, and never split by BPE.
/// </remarks>
public static class TextualInversion
{
    /// <summary>The file diffusers looks for in a textual inversion repository (safetensors; its <c>learned_embeds.bin</c>
    /// is pickle, which is not read here).</summary>
    public const string DefaultWeightName = "learned_embeds.safetensors";

    /// <summary>The keys of an SDXL embedding file, for the first and the second text encoder.</summary>
    public static readonly (string First, string Second) SdxlKeys = ("clip_l", "clip_g");

    private static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt", ".pkl"];

    /// <summary>
    /// diffusers' <c>load_textual_inversion(paths, token=tokens, tokenizer=tokenizer, text_encoder=textEncoder)</c> for
    /// safetensors files. <paramref name="tokens"/>: null (every token from its file), one token per file, or, for a single
    /// tensor of n embeddings, n tokens (one vector each). <paramref name="key"/> takes that one tensor from each file
    /// (<c>clip_l</c> / <c>clip_g</c> of an SDXL file), which then needs tokens as diffusers' tensor input does.
    /// Returns the tokens added, in id order (<c>tok</c>, <c>tok_1</c> ... for a multi-vector embedding).
    /// </summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="InvalidDataException">A pickle file, or tensors that are no textual inversion.</exception>
    /// <exception cref="SafetensorsFormatException">Not a valid safetensors file.</exception>
    /// <exception cref="ArgumentException">diffusers' checks (see the class remarks).</exception>
    public static IReadOnlyList<string> Load(CLIPTokenizer tokenizer, ICLIPTextEncoder textEncoder, IReadOnlyList<string> paths,
        IReadOnlyList<string?>? tokens = null, string? key = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("Give at least one textual inversion file.", nameof(paths));
        using var scope = NewDisposeScope();
        var normalized = NormalizeTokens(tokens, paths.Count);
        CheckInputs(tokenizer, textEncoder, paths.Count, normalized);
        var stateDicts = paths.Select(p => ReadFile(p, key)).ToList();
        return LoadStateDicts(tokenizer, textEncoder, stateDicts, normalized);
    }

    /// <summary>
    /// diffusers' <c>load_textual_inversion(embedding, token=tokens, ...)</c> for a tensor, as SDXL users pass
    /// <c>state_dict["clip_g"]</c>: [dim] or [n, dim] with one token (a multi-vector token for n &gt; 1), or [n, dim]
    /// with n tokens (one vector each).
    /// </summary>
    /// <exception cref="ArgumentException">diffusers' checks (see the class remarks).</exception>
    public static IReadOnlyList<string> Load(CLIPTokenizer tokenizer, ICLIPTextEncoder textEncoder, Tensor embedding, IReadOnlyList<string?>? tokens)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        var normalized = NormalizeTokens(tokens, 1);
        CheckInputs(tokenizer, textEncoder, 1, normalized);
        return LoadStateDicts(tokenizer, textEncoder, [StateDict.OfTensor(embedding, "the tensor")], normalized);
    }

    /// <summary>
    /// diffusers' <c>unload_textual_inversion(tokens, tokenizer, text_encoder)</c>: removes the named added tokens (all
    /// non-special added tokens when <paramref name="tokens"/> is null or empty) and their rows, and renumbers the tokens
    /// kept so that ids stay consecutive after the last special token, as their rows are. A multi-vector token's
    /// <c>tok_1</c> ... are tokens of their own: name them too. Returns the tokens removed.
    /// </summary>
    /// <exception cref="ArgumentException">None of <paramref name="tokens"/> is an added token ("No tokens to remove found").</exception>
    /// <remarks>diffusers 0.36 renumbers kept tokens with a counter that only advances after a move, so removing a token
    /// loaded before others gives two of them one id; here they are renumbered in order, matching the rows diffusers keeps.</remarks>
    public static IReadOnlyList<string> Unload(CLIPTokenizer tokenizer, ICLIPTextEncoder textEncoder, IReadOnlyList<string>? tokens = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(textEncoder);
        var added = tokenizer.AddedTokens.OrderBy(t => t.Id).ToList();
        var removeIds = new HashSet<int>();
        int? lastSpecial = null;
        foreach (var t in added)
        {
            if (t.Special) lastSpecial = t.Id;
            else if (tokens is not { Count: > 0 } || tokens.Contains(t.Content)) removeIds.Add(t.Id);
        }
        if (tokens is { Count: > 0 } && removeIds.Count == 0) throw new ArgumentException("No tokens to remove found");
        if (removeIds.Count == 0) return [];
        if (lastSpecial is not { } last)
            throw new InvalidOperationException("The tokenizer has no special token: diffusers' unload keeps the rows up to the last special token.");
        var weight = textEncoder.TokenEmbeddingWeight;
        if (weight.shape[0] <= removeIds.Max())
            throw new InvalidOperationException($"The text encoder has {weight.shape[0]} token embeddings, fewer than the tokenizer's added tokens need: they do not belong together.");

        var kept = new List<AddedToken>();
        int next = last + 1;
        foreach (var t in added.Where(t => !removeIds.Contains(t.Id)))
            kept.Add(t.Special || t.Id <= last ? t : t with { Id = next++ });
        using (NewDisposeScope())
        {
            var rows = new List<long>();
            for (long i = 0; i < weight.shape[0]; i++)
                if (i <= last || !removeIds.Contains((int)i)) rows.Add(i);
            using var index = tensor(rows.ToArray(), device: weight.device);
            textEncoder.SetTokenEmbeddingWeight(weight.index_select(0, index));
        }
        tokenizer.SetAddedTokens(kept);
        return added.Where(t => removeIds.Contains(t.Id)).Select(t => t.Content).ToList();
    }

    /// <summary>
    /// diffusers' <c>maybe_convert_prompt</c>: for every added token among <paramref name="tokenizer"/>'s tokens of the
    /// prompt that has <c>tok_1</c> (<c>tok_2</c> ...) beside it, every occurrence of its text in the prompt (plain
    /// substring replacement, as Python's <c>str.replace</c>) becomes <c>"tok tok_1 ... tok_{n-1}"</c>. Prompts without
    /// multi-vector tokens come back unchanged.
    /// </summary>
    public static string MaybeConvertPrompt(string prompt, CLIPTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var added = tokenizer.AddedTokensEncoder;
        // Only a token with a "_1" sibling changes the prompt; the others are replaced by themselves.
        if (!added.Keys.Any(k => k.EndsWith("_1", StringComparison.Ordinal) && added.ContainsKey(k[..^2]))) return prompt;
        // diffusers walks a Python set (its order varies with the hash seed); first appearance is one of those orders.
        foreach (string token in tokenizer.Tokenize(prompt).Distinct(StringComparer.Ordinal))
        {
            if (!added.ContainsKey(token)) continue;
            var replacement = new System.Text.StringBuilder(token);
            for (int i = 1; added.ContainsKey($"{token}_{i}"); i++) replacement.Append(' ').Append(token).Append('_').Append(i);
            prompt = prompt.Replace(token, replacement.ToString(), StringComparison.Ordinal);
        }
        return prompt;
    }

    /// <summary><see cref="MaybeConvertPrompt(string, CLIPTokenizer)"/> of each prompt.</summary>
    public static IReadOnlyList<string> MaybeConvertPrompt(IReadOnlyList<string> prompts, CLIPTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        return prompts.Select(p => MaybeConvertPrompt(p, tokenizer)).ToList();
    }

    /// <summary>Whether the safetensors file at <paramref name="path"/> is an SDXL embedding (<c>clip_l</c> and <c>clip_g</c>).</summary>
    /// <exception cref="FileNotFoundException">No file there.</exception>
    /// <exception cref="InvalidDataException">A pickle file.</exception>
    /// <exception cref="SafetensorsFormatException">Not a valid safetensors file.</exception>
    public static bool IsSdxlFile(string path)
    {
        CheckFile(path);
        var keys = SafetensorsHeader.Read(path).Tensors.Keys;
        return keys.Contains(SdxlKeys.First) && keys.Contains(SdxlKeys.Second);
    }

    /// <summary>
    /// The components' <c>LoadTextualInversion</c>: checks the pair exists (diffusers' "requires `self.tokenizer`"), and
    /// takes an SDXL file's half for <paramref name="target"/> when no key is given.
    /// </summary>
    internal static IReadOnlyList<string> LoadInto(CLIPTokenizer? tokenizer, ICLIPTextEncoder? textEncoder, TextualInversionTarget target,
        string pipeline, IReadOnlyList<string> paths, IReadOnlyList<string?>? tokens, string? key)
    {
        var (tok, encoder) = Pair(tokenizer, textEncoder, target, pipeline);
        ArgumentNullException.ThrowIfNull(paths);
        if (key is null && paths.Count > 0 && paths.All(p => File.Exists(p) && !PickleExtensions.Any(e => p.EndsWith(e, StringComparison.OrdinalIgnoreCase)) && IsSdxlFile(p)))
            key = target == TextualInversionTarget.TextEncoder ? SdxlKeys.First : SdxlKeys.Second;
        return Load(tok, encoder, paths, tokens, key);
    }

    /// <summary>The tokenizer and text encoder of <paramref name="target"/>, or diffusers' error when the pipeline lacks them.</summary>
    internal static (CLIPTokenizer, ICLIPTextEncoder) Pair(CLIPTokenizer? tokenizer, ICLIPTextEncoder? textEncoder, TextualInversionTarget target, string pipeline)
    {
        string suffix = target == TextualInversionTarget.TextEncoder ? "" : "_2";
        if (tokenizer is null)
            throw new ArgumentException($"{pipeline} requires `self.tokenizer{suffix}` (a CLIP tokenizer) for calling `load_textual_inversion`: this model has none.");
        if (textEncoder is null)
            throw new ArgumentException($"{pipeline} requires `self.text_encoder{suffix}` (a CLIP text encoder) for calling `load_textual_inversion`: this model has none.");
        return (tokenizer, textEncoder);
    }

    private static List<string?> NormalizeTokens(IReadOnlyList<string?>? tokens, int sources)
    {
        // diffusers: tokens = [token] if not a list; if tokens[0] is None: tokens = tokens * len(paths).
        var list = tokens is { Count: > 0 } ? tokens.ToList() : [null];
        if (list[0] is null) list = Enumerable.Range(0, sources).SelectMany(_ => list).ToList();
        foreach (var t in list)
            if (t is { Length: 0 }) throw new ArgumentException("A textual inversion token cannot be empty.");
        return list;
    }

    private static void CheckInputs(CLIPTokenizer tokenizer, ICLIPTextEncoder textEncoder, int sources, List<string?> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(textEncoder);
        if (sources > 1 && sources != tokens.Count)
            throw new ArgumentException($"You have passed a list of models of length {sources}, and list of tokens of length {tokens.Count} Make sure both lists have the same length.");
        var valid = tokens.Where(t => t is not null).ToList();
        if (valid.Distinct(StringComparer.Ordinal).Count() < valid.Count)
            throw new ArgumentException($"You have passed a list of tokens that contains duplicates: {PythonList(tokens)}");
    }

    private static IReadOnlyList<string> LoadStateDicts(CLIPTokenizer tokenizer, ICLIPTextEncoder textEncoder, List<StateDict> stateDicts, List<string?> tokens)
    {
        using var scope = NewDisposeScope();
        // 4.1: one tensor of n embeddings for n tokens.
        if (tokens.Count > 1 && stateDicts.Count == 1 && stateDicts[0].Tensor is { } all)
        {
            long n = all.dim() == 0 ? 0 : all.shape[0];
            if (n != tokens.Count)
                throw new ArgumentException($"You have passed a state_dict contains {n} embeddings, and list of tokens of length {tokens.Count} Make sure both have the same length.");
            stateDicts = Enumerable.Range(0, (int)n).Select(i => StateDict.OfTensor(all[i], stateDicts[0].Source)).ToList();
        }

        // _retrieve_tokens_and_embeddings (zip: extra tokens beside a single file are ignored, as diffusers' zip does).
        var named = new List<(string Token, Tensor Embedding, string Source)>();
        foreach (var (sd, given) in stateDicts.Zip(tokens))
        {
            string loaded;
            Tensor embedding;
            if (sd.Tensor is { } t)
            {
                loaded = given ?? throw new ArgumentException(
                    $"You are trying to load a textual inversion embedding that has been saved as a PyTorch tensor ({sd.Source}). Make sure to pass the name of the corresponding token in this case: `token=...`.");
                embedding = t;
            }
            else if (sd.Tensors!.Count == 1)
                (loaded, embedding) = sd.Tensors.First();
            else if (sd.Tensors.TryGetValue(A1111Key, out var a1111))
            {
                loaded = given ?? sd.Name ?? throw new ArgumentException(
                    $"{sd.Source} is an A1111 embedding (string_to_param.*) without a name in its metadata: pass the token to use.");
                embedding = a1111;
            }
            else if (sd.Tensors.ContainsKey(SdxlKeys.First) && sd.Tensors.ContainsKey(SdxlKeys.Second))
                throw new InvalidDataException(
                    $"{sd.Source} holds SDXL embeddings for two text encoders ({SdxlKeys.First}, {SdxlKeys.Second}): load key {SdxlKeys.First} into text_encoder and {SdxlKeys.Second} into text_encoder_2, each with a token.");
            else
                throw new InvalidDataException(
                    $"Loaded state dictionary is incorrect: {sd.Source} has {sd.Tensors.Count} tensors ({string.Join(", ", sd.Tensors.Keys.Take(8))}). Please verify that the loaded state dictionary of the textual embedding either only has a single key or includes the `string_to_param` input key.");
            string token = given ?? loaded;
            if (tokenizer.ContainsToken(token))
                throw new ArgumentException($"Token {token} already in tokenizer vocabulary. Please choose a different token name or remove {token} and embedding from the tokenizer and text encoder.");
            named.Add((token, embedding, sd.Source));
        }

        // _extend_tokens_and_embeddings
        var newTokens = new List<string>();
        var rows = new List<Tensor>();
        var added = tokenizer.AddedTokensEncoder;
        foreach (var (token, embedding, source) in named)
        {
            if (tokenizer.ContainsToken($"{token}_1"))
            {
                var multi = new List<string> { token };
                for (int i = 1; added.ContainsKey($"{token}_{i}"); i++) multi.Add($"{token}_{i}");
                throw new ArgumentException($"Multi-vector Token {PythonList(multi)} already in tokenizer vocabulary. Please choose a different token name or remove the {PythonList(multi)} and embedding from the tokenizer and text encoder.");
            }
            if (embedding.dim() is not (1 or 2) || embedding.numel() == 0 || !embedding.is_floating_point())
                throw new InvalidDataException($"{source}: a textual inversion embedding is a float tensor [dim] or [vectors, dim], got {embedding.dtype} [{string.Join(", ", embedding.shape)}].");
            if (embedding.dim() == 2 && embedding.shape[0] > 1)
            {
                for (int i = 0; i < embedding.shape[0]; i++)
                {
                    newTokens.Add(i == 0 ? token : $"{token}_{i}");
                    rows.Add(embedding[i]);
                }
            }
            else
            {
                newTokens.Add(token);
                rows.Add(embedding.dim() == 2 ? embedding[0] : embedding);
            }
        }
        foreach (string token in newTokens)
        {
            if (newTokens.Count(t => t == token) > 1)
                throw new ArgumentException($"Token {token} would be added twice: give each embedding its own token.");
            if (tokenizer.ContainsToken(token))
                throw new ArgumentException($"Token {token} already in tokenizer vocabulary. Please choose a different token name or remove {token} and embedding from the tokenizer and text encoder.");
        }

        var weight = textEncoder.TokenEmbeddingWeight;
        long width = weight.shape[1];
        var wrong = rows.FirstOrDefault(r => r.shape[^1] != width);
        if (wrong is not null)
            throw new ArgumentException($"Loaded embeddings are of incorrect shape. Expected each textual inversion embedding to be of shape {width} (the text encoder's hidden size), but are {wrong.shape[^1]}.");
        int size = tokenizer.VocabSize;
        if (weight.shape[0] < size)
            throw new InvalidOperationException($"The text encoder has {weight.shape[0]} token embeddings, fewer than its tokenizer's {size} tokens: they do not belong together.");
        if (tokenizer.NextTokenId != size)
            throw new InvalidOperationException($"The tokenizer would give the next added token id {tokenizer.NextTokenId}, not {size}: its ids are not consecutive.");

        // resize_token_embeddings(len(tokenizer) + n), then one row per new token, in the table's dtype and device.
        using var table = cat([weight.narrow(0, 0, size), stack(rows).to(weight.dtype, weight.device)], 0);
        textEncoder.SetTokenEmbeddingWeight(table);
        foreach (string token in newTokens) tokenizer.AddToken(token);
        return newTokens;
    }

    private const string A1111Key = "string_to_param.*";

    /// <summary>A list of tokens as diffusers' messages print it (Python's repr).</summary>
    private static string PythonList(IEnumerable<string?> tokens) =>
        "[" + string.Join(", ", tokens.Select(t => t is null ? "None" : "'" + t + "'")) + "]";

    private static void CheckFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (PickleExtensions.Any(e => path.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
            throw new InvalidDataException(
                $"{path} is a pickle file, which DiffusersSharp never reads (loading pickle can run code): convert it to safetensors, e.g. in Python " +
                "safetensors.torch.save_file({\"<token>\": tensor}, \"embedding.safetensors\"), with the tensor from torch.load (diffusers' learned_embeds.bin: its one value; A1111's .pt: [\"string_to_param\"][\"*\"]).");
        if (!File.Exists(path)) throw new FileNotFoundException($"Textual inversion file not found: {path}", path);
    }

    private static StateDict ReadFile(string path, string? key)
    {
        CheckFile(path);
        using var file = SafetensorsFile.Open(path);
        string source = Path.GetFileName(path);
        if (key is not null)
        {
            if (!file.Tensors.ContainsKey(key))
                throw new InvalidDataException($"{source} has no tensor '{key}' (it has {string.Join(", ", file.Tensors.Keys.Take(8))}).");
            return StateDict.OfTensor(file.Read(key), $"{source}[{key}]");
        }
        var tensors = file.ReadAll();
        return new StateDict(tensors, null, file.Header.Metadata.GetValueOrDefault("name"), source);
    }

    /// <summary>What diffusers' <c>load_textual_inversion_state_dicts</c> gives for one source: a file's tensors or one tensor.</summary>
    private sealed record StateDict(Dictionary<string, Tensor>? Tensors, Tensor? Tensor, string? Name, string Source)
    {
        public static StateDict OfTensor(Tensor tensor, string source) => new(null, tensor, null, source);
    }
}
