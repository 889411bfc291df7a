using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Training.Shapes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>Options of <see cref="TransformerTrainingTask"/>.</summary>
public sealed record TransformerTrainingOptions
{
    /// <summary>Scenes per step.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Side the scenes are drawn at (the pipeline's default size for the model).</summary>
    public int ImageSize { get; init; } = ShapeScenes.DefaultImageSize;

    /// <summary>Probability of replacing a caption by "" (classifier-free guidance and negative prompts need it).</summary>
    public double CaptionDropout { get; init; } = 0.1;

    /// <summary>Length of the (zero) T5 part of the prompt embeddings: the pipeline's <c>max_sequence_length</c>, 256 by default.</summary>
    public int MaxSequenceLength { get; init; } = 256;

    /// <summary>Whether the CLIP encoders are trained with the transformer (else they stay as built).</summary>
    public bool TrainTextEncoders { get; init; } = true;

    /// <summary>The flow-matching objective's options.</summary>
    public FlowMatchingOptions Objective { get; init; } = new();

    /// <summary>Seed of the scene stream.</summary>
    public long DataSeed { get; init; }
}

/// <summary>
/// Trains the SD3 transformer (and, by default, both CLIP encoders) on drawn scenes with the rectified-flow objective.
/// Latents come from the frozen VAE as the pipelines expect them (<c>(sample - shift_factor) · scaling_factor</c>);
/// prompt embeddings come from the pipeline's own <see cref="StableDiffusion3PromptEncoder"/> without T5, so training
/// sees exactly the 77 CLIP tokens + <c>max_sequence_length</c> zero tokens that generation will give the model.
/// </summary>
public sealed class TransformerTrainingTask : ITrainingTask
{
    private readonly SceneBatches _batches;
    private readonly StableDiffusion3PromptEncoder _promptEncoder;
    private readonly FlowMatchingObjective _objective;
    private readonly Device _device;

    /// <summary>Builds the task; the models are trained in place, the VAE is only used to encode.</summary>
    public TransformerTrainingTask(SD3Transformer2DModel transformer, CLIPTextModelWithProjection textEncoder, CLIPTextModelWithProjection textEncoder2,
        CLIPTokenizer tokenizer, CLIPTokenizer tokenizer2, AutoencoderKL vae, FlowMatchEulerDiscreteSchedulerConfig scheduler,
        TransformerTrainingOptions options, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(textEncoder);
        ArgumentNullException.ThrowIfNull(textEncoder2);
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(options);
        if (!(options.CaptionDropout is >= 0 and <= 1)) throw new ArgumentException($"caption dropout must be in [0, 1], got {options.CaptionDropout}.", nameof(options));
        int latent = options.ImageSize / vae.VaeScaleFactor;
        if (options.ImageSize % (vae.VaeScaleFactor * transformer.Config.PatchSize) != 0)
            throw new ArgumentException($"image size {options.ImageSize} must be a multiple of {vae.VaeScaleFactor * transformer.Config.PatchSize} (VAE factor x patch size).", nameof(options));
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new ArgumentException($"the VAE has {vae.Config.LatentChannels} latent channels, the transformer takes {transformer.Config.InChannels}.");
        int clipWidth = (int)(textEncoder.Config.HiddenSize + textEncoder2.Config.HiddenSize);
        if (clipWidth > transformer.Config.JointAttentionDim)
            throw new ArgumentException($"CLIP widths {textEncoder.Config.HiddenSize} + {textEncoder2.Config.HiddenSize} exceed joint_attention_dim {transformer.Config.JointAttentionDim}.");
        if (textEncoder.Config.ProjectionDim + textEncoder2.Config.ProjectionDim != transformer.Config.PooledProjectionDim)
            throw new ArgumentException($"CLIP projections {textEncoder.Config.ProjectionDim} + {textEncoder2.Config.ProjectionDim} must equal pooled_projection_dim {transformer.Config.PooledProjectionDim}.");
        Transformer = transformer;
        TextEncoder = textEncoder;
        TextEncoder2 = textEncoder2;
        Vae = vae;
        Options = options;
        Scheduler = scheduler;
        LatentSize = latent;
        _device = device ?? CPU;
        _batches = new SceneBatches(options.DataSeed, options.BatchSize);
        _objective = new FlowMatchingObjective(scheduler, options.Objective);
        _promptEncoder = new StableDiffusion3PromptEncoder(tokenizer, textEncoder, tokenizer2, textEncoder2, null, null, transformer.Config.JointAttentionDim);
        vae.eval();
        foreach (var p in vae.parameters()) p.requires_grad = false;
        var trained = new List<(string, Parameter)>();
        void Add(string prefix, nn.Module module)
        {
            foreach (var (name, p) in module.named_parameters())
                if (p.requires_grad) trained.Add((prefix + name, p));
        }
        Add("transformer.", transformer);
        if (options.TrainTextEncoders)
        {
            Add("text_encoder.", textEncoder);
            Add("text_encoder_2.", textEncoder2);
        }
        else
        {
            foreach (var p in textEncoder.parameters().Concat(textEncoder2.parameters())) p.requires_grad = false;
        }
        TrainableParameters = trained;
    }

    /// <summary>The MMDiT being trained.</summary>
    public SD3Transformer2DModel Transformer { get; }

    /// <summary>CLIP-L.</summary>
    public CLIPTextModelWithProjection TextEncoder { get; }

    /// <summary>CLIP-G.</summary>
    public CLIPTextModelWithProjection TextEncoder2 { get; }

    /// <summary>The frozen VAE.</summary>
    public AutoencoderKL Vae { get; }

    /// <summary>The scheduler config whose training schedule the objective uses.</summary>
    public FlowMatchEulerDiscreteSchedulerConfig Scheduler { get; }

    /// <summary>The options.</summary>
    public TransformerTrainingOptions Options { get; }

    /// <summary>Side of the latents.</summary>
    public int LatentSize { get; }

    /// <inheritdoc/>
    public string Stage => "transformer";

    /// <inheritdoc/>
    public int BatchSize => Options.BatchSize;

    /// <inheritdoc/>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters { get; }

    /// <inheritdoc/>
    public void SetTraining(bool training)
    {
        Transformer.train(training);
        TextEncoder.train(training && Options.TrainTextEncoders);
        TextEncoder2.train(training && Options.TrainTextEncoders);
    }

    /// <summary>The captions of <paramref name="scenes"/>, some replaced by "" (draws from <paramref name="generator"/>).</summary>
    public string[] Captions(IReadOnlyList<SceneSpec> scenes, torch.Generator generator)
    {
        using var drop = rand([scenes.Count], dtype: ScalarType.Float64, generator: generator);
        var d = drop.data<double>().ToArray();
        return scenes.Select((s, i) => d[i] < Options.CaptionDropout ? "" : s.Caption).ToArray();
    }

    /// <summary>Clean latents of scenes as the transformer sees them: <c>(vae.encode(x).sample - shift) · scale</c>.</summary>
    public Tensor Latents(IReadOnlyList<SceneSpec> scenes, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = SceneTensors.Draw(scenes, Options.ImageSize, _device).to(Vae.Config.ForceUpcast ? ScalarType.Float32 : Vae.WeightDtype());
        using var posterior = Vae.Encode(x);
        var z = posterior.Sample(generator);
        var latents = (z - (Vae.Config.ShiftFactor ?? 0.0)) * Vae.Config.ScalingFactor;
        return latents.to(Transformer.Dtype).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public Tensor ComputeLoss(long step, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        var scenes = _batches.Batch(step);
        var captions = Captions(scenes, generator);
        var latents = Latents(scenes, generator);
        EncodedPrompt prompt;
        var request = new StableDiffusion3Request { Prompt = captions, MaxSequenceLength = Options.MaxSequenceLength };
        if (Options.TrainTextEncoders) prompt = _promptEncoder.Encode(request, false, _device);
        else using (no_grad()) prompt = _promptEncoder.Encode(request, false, _device);
        using (prompt)
        {
            var noise = randn(latents.shape, dtype: ScalarType.Float32, generator: generator).to(latents.dtype, _device);
            var batch = _objective.Sample(latents, noise, generator);
            // The zero T5 block is one key weighted by its count: the same loss as the full 333 tokens, several times faster.
            var (context, repeats) = SD3Transformer2DModel.CollapseRepeatedTail(prompt.PromptEmbeds);
            var prediction = Transformer.forward(batch.NoisyInput, context, prompt.PooledPromptEmbeds, batch.Timesteps, lastTokenRepeats: repeats);
            return FlowMatchingObjective.Loss(prediction, batch.Target, batch.Weighting).MoveToOuterDisposeScope();
        }
    }

    /// <inheritdoc/>
    public JsonObject Describe() => new()
    {
        ["transformer"] = JsonSerializer.SerializeToNode(Transformer.Config, ConfigJson.Options),
        ["text_encoder"] = JsonSerializer.SerializeToNode(TextEncoder.Config, ConfigJson.Options),
        ["text_encoder_2"] = JsonSerializer.SerializeToNode(TextEncoder2.Config, ConfigJson.Options),
        ["vae"] = JsonSerializer.SerializeToNode(Vae.Config, ConfigJson.Options),
        ["scheduler"] = JsonSerializer.SerializeToNode(Scheduler, ConfigJson.Options),
        ["options"] = JsonSerializer.SerializeToNode(Options, ConfigJson.Options),
    };
}
