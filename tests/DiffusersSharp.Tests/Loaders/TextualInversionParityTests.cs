using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Textual inversion bookkeeping against diffusers v0.36.0's own TextualInversionLoaderMixin (fixture
/// local-diffusers/textual-inversion, made by tools/reference/textual_inversion.py on stand-in tokenizer / encoder; see its
/// README) and token ids against Hugging Face's tokenizers library (hf_tokenizers.json, tools/reference/hf_tokenizers):
/// every case is replayed on tiny-sdxl's real tokenizers and CLIP text encoders (width 32 like the stand-ins); the added
/// tokens and their ids, the new embedding rows (bit for bit), the conversions of 12 prompts, the ids of every prompt and
/// conversion, and the errors must be diffusers'.
/// </summary>
public sealed class TextualInversionParityTests(ITestOutputHelper output)
{
    private const int BaseRows = 49408;
    private static readonly string Dir = Fixtures.Path("local-diffusers/textual-inversion");
    private static readonly JsonObject Cases = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "cases.json")))!.AsObject();
    private static readonly JsonObject HfIds = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "hf_tokenizers.json")))!["cases"]!.AsObject();

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases["cases"]!.AsArray()) data.Add(c!["name"]!.GetValue<string>());
        return data;
    }

    private static string Embedding(string file) => Path.Combine(Dir, "embeddings", file);

    /// <summary>One tokenizer + text encoder pair of tiny-sdxl (a fresh copy per case).</summary>
    private sealed class Pair : IDisposable
    {
        public Pair(string tokenizer, Func<string, ICLIPTextEncoder> load, string encoder)
        {
            Tokenizer = CLIPTokenizer.FromFolder(Fixtures.Path("tiny-sdxl/model/" + tokenizer));
            Encoder = load(Fixtures.Path("tiny-sdxl/model/" + encoder));
            Base = Encoder.TokenEmbeddingWeight.detach().clone();
        }

        public CLIPTokenizer Tokenizer { get; }
        public ICLIPTextEncoder Encoder { get; }
        public Tensor Base { get; }

        public void Dispose()
        {
            ((IDisposable)Encoder).Dispose();
            Base.Dispose();
        }
    }

    private static Pair First() => new("tokenizer", f => CLIPTextModel.FromPretrained(f), "text_encoder");
    private static Pair Second() => new("tokenizer_2", f => CLIPTextModelWithProjection.FromPretrained(f), "text_encoder_2");

    private static IReadOnlyList<string?>? Tokens(JsonNode? token) => token switch
    {
        null => null,
        JsonArray list => list.Select(t => t?.GetValue<string>()).ToList(),
        _ => [token.GetValue<string>()],
    };

    private static void Replay(JsonObject step, Pair pair)
    {
        var tokens = Tokens(step["token"]);
        if (step["op"]!.GetValue<string>() == "unload")
        {
            TextualInversion.Unload(pair.Tokenizer, pair.Encoder, Tokens(step["tokens"])?.Select(t => t!).ToList());
            return;
        }
        switch (step["src"])
        {
            case JsonArray files:
                TextualInversion.Load(pair.Tokenizer, pair.Encoder, files.Select(f => Embedding(f!.GetValue<string>())).ToList(), tokens);
                break;
            case JsonObject { } src when src["key"] is { } key:
                using (var file = SafetensorsFile.Open(Embedding(src["file"]!.GetValue<string>())))
                using (var tensor = file.Read(key.GetValue<string>()))
                    TextualInversion.Load(pair.Tokenizer, pair.Encoder, tensor, tokens);
                break;
            case JsonObject src: // A1111: diffusers got the nested .pt dict, we read the flattened safetensors file
                TextualInversion.Load(pair.Tokenizer, pair.Encoder, [Embedding(src["file"]!.GetValue<string>())], tokens);
                break;
            case { } file:
                TextualInversion.Load(pair.Tokenizer, pair.Encoder, [Embedding(file.GetValue<string>())], tokens);
                break;
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void CaseMatchesDiffusers(string name)
    {
        var c = Cases["cases"]!.AsArray().Select(n => n!.AsObject()).Single(n => n["name"]!.GetValue<string>() == name);
        using var first = First();
        using var second = Second();
        Exception? error = null;
        try
        {
            foreach (var step in c["steps"]!.AsArray())
                Replay(step!.AsObject(), step["pair"]?.GetValue<string>() == "2" ? second : first);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException)
        {
            error = e;
        }

        if (c["error"] is { } expected)
        {
            Assert.NotNull(error);
            Assert.Equal("ValueError", expected["type"]!.GetValue<string>());
            string message = expected["message"]!.GetValue<string>();
            output.WriteLine($"diffusers: {message[..Math.Min(message.Length, 160)]}\nours:      {error!.Message}");
            if (name == "error_sdxl_file_whole")
            {
                // diffusers: "Loaded state dictionary is incorrect"; we say what the file is and how to load it.
                Assert.IsType<InvalidDataException>(error);
                Assert.Contains("clip_l", error.Message);
                return;
            }
            Assert.StartsWith(Head(message), error.Message);
            return;
        }
        Assert.Null(error);
        Check(name, c["result"]!.AsObject(), first);
        if (c["result_2"] is JsonObject r2) Check(name + "_2", r2, second);
    }

    /// <summary>diffusers' message up to its first full stop or its dump of the state dict.</summary>
    private static string Head(string message)
    {
        int dict = message.IndexOf(": {", StringComparison.Ordinal);
        int stop = message.IndexOf(". ", StringComparison.Ordinal);
        int end = new[] { dict, stop, message.Length }.Where(i => i >= 0).Min();
        return message[..end];
    }

    private void Check(string name, JsonObject r, Pair pair)
    {
        var tokenizer = pair.Tokenizer;
        var weight = pair.Encoder.TokenEmbeddingWeight;
        int rows = r["table_rows"]!.GetValue<int>();
        Assert.Equal(rows, (int)weight.shape[0]);
        Assert.Equal(rows, pair.Encoder.Config.VocabSize);
        Assert.Equal(rows, tokenizer.VocabSize);
        Assert.True(weight.narrow(0, 0, BaseRows).eq(pair.Base).all().item<bool>(), "a row of the base vocabulary changed");
        foreach (var (id, values) in r["rows"]!.AsObject())
        {
            var expected = values!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray();
            Assert.Equal(expected, weight[int.Parse(id)].data<float>().ToArray());
        }

        var ours = tokenizer.AddedTokensEncoder.Where(kv => kv.Value >= BaseRows).OrderBy(kv => kv.Value).ToList();
        var theirs = r["added"]!.AsObject().Select(kv => KeyValuePair.Create(kv.Key, kv.Value!.GetValue<int>())).OrderBy(kv => kv.Value).ToList();
        if (name == "unload_middle")
        {
            // diffusers' renumbering lost <cat-toy> and put <multi>_1 on its row (fixture README); the kept tokens are
            // renumbered in order here, each on the row diffusers kept for it.
            Assert.Equal(["<multi>_1", "<multi>_2", "<one-row>"], theirs.Select(kv => kv.Key));
            Assert.Equal([KeyValuePair.Create("<cat-toy>", 49408), KeyValuePair.Create("<multi>_1", 49409),
                KeyValuePair.Create("<multi>_2", 49410), KeyValuePair.Create("<one-row>", 49411)], ours);
            return;
        }
        Assert.Equal(theirs, ours);

        var hf = HfIds[name]!.AsObject();
        var converted = r["converted"]!.AsObject();
        var addedIds = tokenizer.AddedTokensEncoder.Values.ToHashSet();
        foreach (var prompt in Cases["prompts"]!.AsArray().Select(p => p!.GetValue<string>()))
        {
            // Our tokenize() spells added tokens as diffusers' stand-in did (itself checked against tokenizers).
            var tokens = tokenizer.Tokenize(prompt);
            var ids = tokenizer.Encode(prompt, 77, padToMaxLength: false, truncate: false).Ids[1..^1];
            Assert.Equal(tokens.Count, ids.Length);
            var matched = tokens.Where((_, i) => addedIds.Contains(ids[i])).ToList();
            Assert.Equal(r["added_matches"]![prompt]!.AsArray().Select(t => t!.GetValue<string>()), matched);

            string conversion = TextualInversion.MaybeConvertPrompt(prompt, tokenizer);
            Assert.Equal(converted[prompt]!.GetValue<string>(), conversion);
            foreach (string text in new[] { prompt, conversion })
                Assert.Equal(hf[text]!.AsArray().Select(i => i!.GetValue<int>()), tokenizer.Encode(text, 77, padToMaxLength: false, truncate: false).Ids[1..^1]);
        }
    }
}
