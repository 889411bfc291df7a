using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Textual inversion in the pipelines: the prompt embeddings with embeddings loaded equal the CLIP encoders run on their
/// token tables with the embeddings' rows appended, fed the ids Hugging Face's tokenizers gives diffusers' conversion of
/// the prompt (fixture local-diffusers/textual-inversion); plain prompts are unchanged after loading and after unloading;
/// dtypes, the pickle refusal and the other checks.
/// </summary>
public sealed class TextualInversionTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string Dir = Fixtures.Path("local-diffusers/textual-inversion");
    private static readonly JsonObject HfIds = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "hf_tokenizers.json")))!["cases"]!.AsObject();
    private readonly string _tmp = Directory.CreateTempSubdirectory("ti-tests-").FullName;

    private static string Embedding(string file) => Path.Combine(Dir, "embeddings", file);

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    /// <summary>[1, 77] ids: BOS, the recorded ids, EOS, then the tokenizer's padding.</summary>
    private static Tensor Ids(string recordedCase, string text, int padId)
    {
        var body = HfIds[recordedCase]![text]!.AsArray().Select(i => (long)i!.GetValue<int>()).ToList();
        var ids = new List<long> { 49406 };
        ids.AddRange(body);
        ids.Add(49407);
        while (ids.Count < 77) ids.Add(padId);
        return tensor(ids.ToArray(), [1, 77]);
    }

    /// <summary>The embedding table of a freshly loaded encoder with the rows of <paramref name="files"/> (key, file) appended.</summary>
    private static void AppendRows(ICLIPTextEncoder encoder, params (string File, string Key)[] files)
    {
        var rows = new List<Tensor> { encoder.TokenEmbeddingWeight.detach().clone() };
        foreach (var (file, key) in files)
        {
            using var f = SafetensorsFile.Open(Embedding(file));
            var t = f.Read(key).to(ScalarType.Float32);
            rows.Add(t.dim() == 1 ? t.unsqueeze(0) : t);
        }
        encoder.SetTokenEmbeddingWeight(cat(rows, 0));
    }

    [Fact]
    public void Sd15PromptEmbedsAreTheEncoderOnTheExtendedTableAndPlainPromptsDoNotChange()
    {
        string model = Fixtures.Path("tiny-sd15/model");
        using var c = StableDiffusionComponents.FromPretrained(model, new PipelineLoadOptions());
        var encoder = c.CreatePromptEncoder();
        Tensor Embeds(string prompt)
        {
            using var e = encoder.Encode(new StableDiffusionRequest { Prompt = prompt }, false, CPU);
            return e.PromptEmbeds.clone();
        }
        const string plain = "a photo of <multi> and <cat-toy>, x<multi>y";
        using var before = Embeds(plain);

        // The case list_of_files_own_tokens: <cat-toy> 49408, <multi> 49409..49411.
        Assert.Equal(["<cat-toy>", "<multi>", "<multi>_1", "<multi>_2"], c.LoadTextualInversion([Embedding("single.safetensors"), Embedding("multi.safetensors")], null));
        const string prompt = "<multi>, <multi> and <cat-toy>";
        string converted = TextualInversion.MaybeConvertPrompt(prompt, c.Tokenizer!);
        Assert.Equal("<multi> <multi>_1 <multi>_2, <multi> <multi>_1 <multi>_2 and <cat-toy>", converted);
        using var ours = Embeds(prompt);

        using var reference = CLIPTextModel.FromPretrained(Path.Combine(model, "text_encoder"));
        AppendRows(reference, ("single.safetensors", "<cat-toy>"), ("multi.safetensors", "<multi>"));
        using var ids = Ids("list_of_files_own_tokens", converted, c.Tokenizer!.PadTokenId);
        using var expected = reference.Forward(ids, outputHiddenStates: false);
        double err = (ours - expected.LastHiddenState).abs().max().item<float>();
        output.WriteLine($"SD 1.5 prompt embeds with textual inversion: max |ours - encoder on the extended table| = {err}");
        Assert.Equal(0, err);

        // The tokens do not touch a prompt without them (the same text, BPE-split, as before loading: "<multi>" was
        // tokenized as plain text then, it is one token now, so compare a prompt that names none).
        const string untouched = "a red cube on a table";
        using var plainLoaded = Embeds(untouched);
        Assert.Equal(4, c.UnloadTextualInversion().Count);
        using var plainUnloaded = Embeds(untouched);
        using var afterUnload = Embeds(plain);
        Assert.True(before.eq(afterUnload).all().item<bool>(), "a prompt encodes differently after unloading");
        Assert.True(plainLoaded.eq(plainUnloaded).all().item<bool>(), "a plain prompt encodes differently with embeddings loaded");
        Assert.Equal(49408, c.TextEncoder!.Config.VocabSize);
        Assert.Equal(49408, c.Tokenizer.VocabSize);
    }

    [Fact]
    public void SdxlHalvesGoToTheirEncodersAndGiveTheEncodersOnTheExtendedTables()
    {
        string model = Fixtures.Path("tiny-sdxl/model");
        using var c = StableDiffusionComponents.FromPretrained(model, new PipelineLoadOptions());
        var encoder = c.CreatePromptEncoder();
        const string prompt = "emb_params <s0> <s1> <s> end";
        using (var plain = encoder.Encode(new StableDiffusionRequest { Prompt = "a red cube" }, false, CPU))
        {
            // An SDXL file gives the half of the encoder it is loaded into (case sdxl_one_token).
            Assert.Equal(["<s>", "<s>_1"], c.LoadTextualInversion(Embedding("sdxl.safetensors"), "<s>"));
            Assert.Equal(["<s>", "<s>_1"], c.LoadTextualInversion(Embedding("sdxl.safetensors"), "<s>", TextualInversionTarget.TextEncoder2));
            using var ours = encoder.Encode(new StableDiffusionRequest { Prompt = prompt }, false, CPU);

            using var te1 = CLIPTextModel.FromPretrained(Path.Combine(model, "text_encoder"));
            using var te2 = CLIPTextModelWithProjection.FromPretrained(Path.Combine(model, "text_encoder_2"));
            AppendRows(te1, ("sdxl.safetensors", "clip_l"));
            AppendRows(te2, ("sdxl.safetensors", "clip_g"));
            string converted = TextualInversion.MaybeConvertPrompt(prompt, c.Tokenizer!);
            Assert.Equal("emb_params <s0> <s1> <s> <s>_1 end", converted);
            Assert.Equal(converted, TextualInversion.MaybeConvertPrompt(prompt, c.Tokenizer2!));
            using var ids1 = Ids("sdxl_one_token", converted, c.Tokenizer!.PadTokenId);
            using var ids2 = Ids("sdxl_one_token_2", converted, c.Tokenizer2!.PadTokenId);
            using var o1 = te1.Forward(ids1);
            using var o2 = te2.Forward(ids2);
            using var embeds = cat([o1.HiddenStates[^2], o2.HiddenStates[^2]], -1);
            double err = (ours.PromptEmbeds - embeds).abs().max().item<float>();
            double errPooled = (ours.PooledPromptEmbeds! - o2.TextEmbeds!).abs().max().item<float>();
            output.WriteLine($"SDXL with textual inversion in both encoders: prompt embeds max err {err}, pooled {errPooled}");
            Assert.Equal(0, err);
            Assert.Equal(0, errPooled);

            c.UnloadTextualInversion(["<s>", "<s>_1"]);
            c.UnloadTextualInversion(["<s>", "<s>_1"], TextualInversionTarget.TextEncoder2);
            using var again = encoder.Encode(new StableDiffusionRequest { Prompt = "a red cube" }, false, CPU);
            Assert.True(plain.PromptEmbeds.eq(again.PromptEmbeds).all().item<bool>());
            Assert.True(plain.PooledPromptEmbeds!.eq(again.PooledPromptEmbeds!).all().item<bool>());
        }
    }

    [Fact]
    public void RowsTakeTheEncodersDtype()
    {
        using var c = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions { Dtype = ScalarType.BFloat16 });
        c.LoadTextualInversion(Embedding("half.safetensors")); // float16 file
        var table = c.TextEncoder!.TokenEmbeddingWeight;
        Assert.Equal(ScalarType.BFloat16, table.dtype);
        using var f = SafetensorsFile.Open(Embedding("half.safetensors"));
        using var expected = f.Read("<half>").to(ScalarType.BFloat16); // as diffusers' data[id] = embedding casts
        Assert.True(table.narrow(0, 49408, 2).eq(expected).all().item<bool>());
        using var e = c.CreatePromptEncoder().Encode(new StableDiffusionRequest { Prompt = "<half> style" }, false, CPU);
        Assert.Equal(ScalarType.BFloat16, e.PromptEmbeds.dtype);
    }

    [Fact]
    public void BadInputIsRefusedBeforeAnythingChanges()
    {
        using var c = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        var pickle = Path.Combine(_tmp, "learned_embeds.bin");
        File.WriteAllBytes(pickle, [0x80, 0x02]);
        var e = Assert.Throws<InvalidDataException>(() => c.LoadTextualInversion(pickle));
        Assert.Contains("safetensors", e.Message);
        Assert.Contains("pickle", e.Message);
        Assert.Throws<FileNotFoundException>(() => c.LoadTextualInversion(Path.Combine(_tmp, "absent.safetensors")));
        Assert.Throws<SafetensorsFormatException>(() => c.LoadTextualInversion(Embedding("../README.md")));

        // A 3-D tensor, an integer tensor: not embeddings.
        var odd = Path.Combine(_tmp, "odd.safetensors");
        using (var t = zeros(1, 2, 32)) SafetensorsWriter.Save(odd, new Dictionary<string, Tensor> { ["<odd>"] = t });
        Assert.Throws<InvalidDataException>(() => c.LoadTextualInversion(odd));
        var ints = Path.Combine(_tmp, "ints.safetensors");
        using (var t = zeros([32], ScalarType.Int64)) SafetensorsWriter.Save(ints, new Dictionary<string, Tensor> { ["<int>"] = t });
        Assert.Throws<InvalidDataException>(() => c.LoadTextualInversion(ints));

        // SD 1.5 has no second encoder; two files naming the same token (diffusers would write both into one row and leave
        // a second row at random); a tok_i already in the vocabulary.
        Assert.Throws<ArgumentException>(() => c.LoadTextualInversion(Embedding("single.safetensors"), "<x>", TextualInversionTarget.TextEncoder2));
        var twice = Assert.Throws<ArgumentException>(() => c.LoadTextualInversion([Embedding("single.safetensors"), Embedding("single.safetensors")], null));
        Assert.Contains("twice", twice.Message);
        c.LoadTextualInversion(Embedding("single.safetensors"), "<m>_2");
        var taken = Assert.Throws<ArgumentException>(() => c.LoadTextualInversion(Embedding("multi.safetensors"), "<m>"));
        Assert.Contains("<m>_2", taken.Message);
        Assert.Equal(49409, c.TextEncoder!.Config.VocabSize);
        Assert.Equal(["<m>_2"], c.Tokenizer!.AddedTokensEncoder.Keys.Where(k => !k.StartsWith("<|", StringComparison.Ordinal)));
        Assert.Throws<ArgumentException>(() => c.UnloadTextualInversion(["<nope>"]));
    }

    [Fact]
    public void A1111FileWithoutNameNeedsAToken()
    {
        using var c = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        var file = Path.Combine(_tmp, "nameless.safetensors");
        using (var p = ones(2, 32))
        using (var t = tensor(new long[] { 265 }))
            SafetensorsWriter.Save(file, new Dictionary<string, Tensor> { ["string_to_param.*"] = p, ["string_to_token.*"] = t });
        Assert.Throws<ArgumentException>(() => c.LoadTextualInversion(file));
        Assert.Equal(["<kw>", "<kw>_1"], c.LoadTextualInversion(file, "<kw>"));
    }
}

/// <summary>Flux: textual inversion goes into the CLIP-L pair (diffusers' default); its pooled output is CLIP-L on the
/// extended table; FluxControlNetPipeline's quirk of converting the T5 prompt with the CLIP tokenizer.</summary>
public sealed class FluxTextualInversionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-flux-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void PooledOutputIsClipOnTheExtendedTableAndT5SeesTheTextUnlessControlNet()
    {
        TinyFluxPipelineFolder.Write(_dir);
        using var c = DiffusersSharp.Pipelines.Flux.FluxComponents.FromPretrained(_dir, new PipelineLoadOptions());
        string dir = Fixtures.Path("local-diffusers/textual-inversion/embeddings");
        c.LoadTextualInversion([Path.Combine(dir, "single.safetensors"), Path.Combine(dir, "multi.safetensors")], null);
        Assert.Throws<InvalidDataException>(() => c.LoadTextualInversion(Path.Combine(dir, "learned_embeds.pt")));
        var encoder = c.CreatePromptEncoder();
        const string prompt = "a photo of <multi> and <cat-toy>";
        using var ours = encoder.Encode(prompt, null, null, null, 1, 32, CPU, ScalarType.Float32);

        using var clip = CLIPTextModel.FromPretrained(Path.Combine(_dir, "text_encoder"));
        var rows = new List<Tensor> { clip.TokenEmbeddingWeight.detach().clone() };
        foreach (var (file, key) in new[] { ("single.safetensors", "<cat-toy>"), ("multi.safetensors", "<multi>") })
        {
            using var f = SafetensorsFile.Open(Path.Combine(dir, file));
            var t = f.Read(key);
            rows.Add(t.dim() == 1 ? t.unsqueeze(0) : t);
        }
        clip.SetTokenEmbeddingWeight(cat(rows, 0));
        string converted = TextualInversion.MaybeConvertPrompt(prompt, c.Tokenizer!);
        Assert.Equal("a photo of <multi> <multi>_1 <multi>_2 and <cat-toy>", converted);
        using var ids = tensor(c.Tokenizer!.Encode(converted, 77).Ids.Select(i => (long)i).ToArray(), [1, 77]);
        using var expected = clip.Forward(ids, outputHiddenStates: false);
        Assert.Equal(0, (ours.PooledPromptEmbeds - expected.PooledOutput).abs().max().item<float>());

        // T5 gets the prompt as written; under FluxControlNetPipeline's conversion, the spelled-out one.
        using var asWritten = encoder.Encode(prompt, null, null, null, 1, 32, CPU, ScalarType.Float32);
        using var spelled = encoder.Encode(prompt, converted, null, null, 1, 32, CPU, ScalarType.Float32);
        encoder.ConvertT5PromptWithClipTokenizer = true;
        using var controlNet = encoder.Encode(prompt, null, null, null, 1, 32, CPU, ScalarType.Float32);
        Assert.True(controlNet.PromptEmbeds.eq(spelled.PromptEmbeds).all().item<bool>());
        Assert.False(asWritten.PromptEmbeds.eq(spelled.PromptEmbeds).all().item<bool>());
        Assert.Equal(["<cat-toy>", "<multi>", "<multi>_1", "<multi>_2"], c.UnloadTextualInversion());
    }
}
