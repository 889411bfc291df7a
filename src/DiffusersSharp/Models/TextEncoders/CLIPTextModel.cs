using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>CLIPTextModel</c>: the CLIP text transformer without projection (SD 1.5's text encoder). Keys
/// <c>text_model.*</c>.
/// </summary>
public sealed class CLIPTextModel : nn.Module, ICLIPTextEncoder
{
    private readonly CLIPTextTransformer text_model;

    /// <summary>The configuration the model was built from (<c>vocab_size</c> follows the token embedding table when
    /// textual inversion resizes it, as transformers' <c>resize_token_embeddings</c> updates it).</summary>
    public CLIPTextConfig Config { get; private set; }

    /// <inheritdoc />
    public Tensor TokenEmbeddingWeight => CLIPLoading.TokenEmbedding(this);

    /// <inheritdoc />
    public void SetTokenEmbeddingWeight(Tensor weight) => Config = CLIPLoading.SetTokenEmbedding(this, Config, weight);

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    public CLIPTextModel(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPTextModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        text_model = new CLIPTextTransformer(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly.</summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static CLIPTextModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        CLIPLoading.Load(folder, (c, meta) => new CLIPTextModel(c, meta), dtype, device, variant);

    /// <summary>
    /// Loads the first text encoder of an original SD 1.x / 2.x / SDXL single file (<c>cond_stage_model.transformer.</c>,
    /// SDXL's <c>conditioner.embedders.0.transformer.</c> or SD 2.x's OpenCLIP <c>cond_stage_model.model.</c>), converted
    /// by <see cref="Loaders.SingleFileConversion.ConvertLdmTextEncoder"/>, with <paramref name="config"/> (the model's
    /// <c>text_encoder/config.json</c>).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds no such encoder, or keys that are not part of it.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static CLIPTextModel FromSingleFile(string path, CLIPTextConfig config, ScalarType? dtype = null, Device? device = null) =>
        CLIPLoading.LoadSingleFile(path, "text_encoder", config, meta => new CLIPTextModel(config, meta), dtype, device);

    /// <summary>
    /// Encodes [batch, seq] int64 token ids (seq &lt;= max_position_embeddings) with the causal mask only.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor, are out of the vocabulary, or too long.</exception>
    public CLIPTextModelOutput Forward(Tensor inputIds, bool outputHiddenStates = true)
    {
        using var scope = NewDisposeScope();
        var ids = TokenIds.Check(inputIds, Config.VocabSize, Config.MaxPositionEmbeddings, nameof(CLIPTextModel));
        var (last, pooled, hidden) = text_model.Run(ids, outputHiddenStates);
        return CLIPLoading.Output(last, pooled, hidden, null);
    }

    /// <summary>
    /// Applies <c>text_model.final_layer_norm</c> to a hidden state, as Stable Diffusion 1.x pipelines do with
    /// <c>clip_skip</c> (<c>final_layer_norm(hidden_states[-(clip_skip + 1)])</c>).
    /// </summary>
    public Tensor FinalLayerNorm(Tensor hiddenState) => text_model.FinalLayerNorm(hiddenState);
}

/// <summary>
/// transformers' <c>CLIPTextModelWithProjection</c> (SD3's text_encoder and text_encoder_2, SDXL's text_encoder_2):
/// the CLIP text transformer plus a bias-free <c>text_projection</c> of the pooled output.
/// </summary>
public sealed class CLIPTextModelWithProjection : nn.Module, ICLIPTextEncoder
{
    private readonly CLIPTextTransformer text_model;
    private readonly Linear text_projection;

    /// <summary>The configuration the model was built from (<c>vocab_size</c> follows the token embedding table when
    /// textual inversion resizes it, as transformers' <c>resize_token_embeddings</c> updates it).</summary>
    public CLIPTextConfig Config { get; private set; }

    /// <inheritdoc />
    public Tensor TokenEmbeddingWeight => CLIPLoading.TokenEmbedding(this);

    /// <inheritdoc />
    public void SetTokenEmbeddingWeight(Tensor weight) => Config = CLIPLoading.SetTokenEmbedding(this, Config, weight);

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    public CLIPTextModelWithProjection(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPTextModelWithProjection))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        text_model = new CLIPTextTransformer(config, device, dtype);
        text_projection = new Linear(config.HiddenSize, config.ProjectionDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly.</summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static CLIPTextModelWithProjection FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        CLIPLoading.Load(folder, (c, meta) => new CLIPTextModelWithProjection(c, meta), dtype, device, variant);

    /// <summary>
    /// Loads SDXL's OpenCLIP-G from an original SGM single file (<c>conditioner.embedders.1.model.</c>), converted by
    /// <see cref="Loaders.SingleFileConversion.ConvertLdmTextEncoder"/>, with <paramref name="config"/> (the model's
    /// <c>text_encoder_2/config.json</c>).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds no such encoder, or keys that are not part of it.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static CLIPTextModelWithProjection FromSingleFile(string path, CLIPTextConfig config, ScalarType? dtype = null, Device? device = null) =>
        CLIPLoading.LoadSingleFile(path, "text_encoder_2", config, meta => new CLIPTextModelWithProjection(config, meta), dtype, device);

    /// <summary>
    /// Encodes [batch, seq] int64 token ids (seq &lt;= max_position_embeddings) with the causal mask only; also returns
    /// <see cref="CLIPTextModelOutput.TextEmbeds"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor, are out of the vocabulary, or too long.</exception>
    public CLIPTextModelOutput Forward(Tensor inputIds, bool outputHiddenStates = true)
    {
        using var scope = NewDisposeScope();
        var ids = TokenIds.Check(inputIds, Config.VocabSize, Config.MaxPositionEmbeddings, nameof(CLIPTextModelWithProjection));
        var (last, pooled, hidden) = text_model.Run(ids, outputHiddenStates);
        var embeds = text_projection.forward(pooled);
        return CLIPLoading.Output(last, pooled, hidden, embeds);
    }
}

/// <summary>
/// A CLIP text model whose token embedding table can be read and replaced (<see cref="CLIPTextModel"/>,
/// <see cref="CLIPTextModelWithProjection"/>): what textual inversion needs, transformers' <c>get_input_embeddings</c> /
/// <c>set_input_embeddings</c>.
/// </summary>
public interface ICLIPTextEncoder
{
    /// <summary>The configuration; <c>vocab_size</c> is the number of rows of the token embedding table.</summary>
    CLIPTextConfig Config { get; }

    /// <summary>The token embedding table <c>text_model.embeddings.token_embedding.weight</c>, [vocab_size, hidden_size]:
    /// the model's own tensor (read it; do not dispose or change it, nor use it after <see cref="SetTokenEmbeddingWeight"/>,
    /// which frees it).</summary>
    Tensor TokenEmbeddingWeight { get; }

    /// <summary>
    /// Replaces the token embedding table by <paramref name="weight"/> [rows, hidden_size] (copied, in the table's dtype and
    /// on its device) and sets <c>vocab_size</c> to its rows, as transformers' <c>set_input_embeddings</c> with
    /// <c>resize_token_embeddings</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Not a [rows, hidden_size] tensor with at least one row.</exception>
    void SetTokenEmbeddingWeight(Tensor weight);
}

/// <summary>Loading and output plumbing shared by the two CLIP text models.</summary>
internal static class CLIPLoading
{
    private const string TextModelPrefix = "text_model.";
    private const string TokenEmbeddingKey = "text_model.embeddings.token_embedding.weight";

    public static Tensor TokenEmbedding(nn.Module model) =>
        model.named_parameters().First(p => p.name == TokenEmbeddingKey).parameter;

    public static CLIPTextConfig SetTokenEmbedding(nn.Module model, CLIPTextConfig config, Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2 || weight.shape[0] < 1 || weight.shape[1] != config.HiddenSize)
            throw new ArgumentException($"A token embedding table must be [rows, {config.HiddenSize}], got [{string.Join(", ", weight.shape)}].", nameof(weight));
        var current = TokenEmbedding(model);
        var table = weight.to(current.dtype, current.device, copy: true);
        StateDictLoader.Replace(model, TokenEmbeddingKey, table);
        current.Dispose(); // the old table, which can be hundreds of MB, is not left to the finalizer
        return config with { VocabSize = (int)weight.shape[0] };
    }

    public static T Load<T>(string folder, Func<CLIPTextConfig, Device, T> build, ScalarType? dtype, Device? device, string? variant) where T : nn.Module =>
        PretrainedLoader.Load(folder, build, dtype, device, variant, new WeightLoadOptions
        {
            // Checkpoints saved by older transformers hold the position_ids arange as a persistent buffer.
            IgnoreUnexpected = k => k is "text_model.embeddings.position_ids" or "embeddings.position_ids",
            // transformers 5 saves CLIPTextModel without its "text_model." prefix; older checkpoints have it.
            AlternateKey = k => k.StartsWith(TextModelPrefix, StringComparison.Ordinal) ? k[TextModelPrefix.Length..] : null,
        });

    public static T LoadSingleFile<T>(string path, string component, CLIPTextConfig config, Func<Device, T> build, ScalarType? dtype, Device? device) where T : nn.Module
    {
        HashSet<string>? names = null;
        return PretrainedLoader.LoadConverted(path, (_, meta) =>
        {
            var model = build(meta);
            names = model.state_dict().Keys.ToHashSet(StringComparer.Ordinal);
            return model;
        }, file => Loaders.SingleFileConversion.ConvertLdmTextEncoder(file, component, config, names), dtype, device);
    }

    public static CLIPTextModelOutput Output(Tensor last, Tensor pooled, List<Tensor> hidden, Tensor? embeds)
    {
        last.MoveToOuterDisposeScope();
        pooled.MoveToOuterDisposeScope();
        embeds?.MoveToOuterDisposeScope();
        foreach (var t in hidden) t.MoveToOuterDisposeScope();
        return new CLIPTextModelOutput(last, pooled, hidden, embeds);
    }
}
