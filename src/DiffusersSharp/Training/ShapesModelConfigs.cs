using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;

namespace DiffusersSharp.Training;

/// <summary>
/// The configs of a small SD3-architecture model for the drawn shape scenes. The text side follows what the SD3
/// pipeline builds without T5: CLIP-L and CLIP-G penultimate states side by side (<c>joint_attention_dim</c> = the sum of
/// their widths, so nothing is padded), then <c>max_sequence_length</c> zero tokens; pooled = both projections.
/// </summary>
public sealed record ShapesModelConfigs
{
    /// <summary>The VAE (16 latent channels as SD3; shift and scaling factors are set from the trained latents).</summary>
    public required AutoencoderKLConfig Vae { get; init; }

    /// <summary>The MMDiT.</summary>
    public required SD3Transformer2DModelConfig Transformer { get; init; }

    /// <summary>CLIP-L style text encoder (quick_gelu).</summary>
    public required CLIPTextConfig TextEncoder { get; init; }

    /// <summary>CLIP-G style text encoder (gelu).</summary>
    public required CLIPTextConfig TextEncoder2 { get; init; }

    /// <summary>The scheduler (SD3's, with shift 1 for these small images).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig Scheduler { get; init; }

    /// <summary>
    /// The shipped size: a fully convolutional VAE [16, 32, 64, 64] (8x down), a 4-layer MMDiT of width 128 (4 heads of 32)
    /// on 16x16 latents (128-pixel images), two 2-layer CLIPs of width 32 with the real 49408-token vocabulary.
    /// </summary>
    public static ShapesModelConfigs Default { get; } = Create(vaeChannels: [16, 32, 64, 64], vaeGroups: 8, sampleSize: 16,
        layers: 4, heads: 4, headDim: 32, clipHidden: 32, clipLayers: 2, clipHeads: 2);

    /// <summary>A tiny variant for tests (seconds on a CPU).</summary>
    public static ShapesModelConfigs Tiny { get; } = Create(vaeChannels: [8, 8], vaeGroups: 4, sampleSize: 8,
        layers: 1, heads: 2, headDim: 8, clipHidden: 8, clipLayers: 1, clipHeads: 2);

    /// <summary>Builds a consistent set of configs.</summary>
    public static ShapesModelConfigs Create(int[] vaeChannels, int vaeGroups, int sampleSize, int layers, int heads, int headDim,
        int clipHidden, int clipLayers, int clipHeads)
    {
        ArgumentNullException.ThrowIfNull(vaeChannels);
        var clip = new CLIPTextConfig
        {
            VocabSize = 49408,
            HiddenSize = clipHidden,
            IntermediateSize = clipHidden * 2,
            ProjectionDim = clipHidden,
            NumHiddenLayers = clipLayers,
            NumAttentionHeads = clipHeads,
            MaxPositionEmbeddings = 77,
            HiddenAct = "quick_gelu",
            // SD3's configs: legacy ids, so pooling takes the argmax id (the first <|endoftext|>).
            PadTokenId = 1,
            BosTokenId = 0,
            EosTokenId = 2,
        };
        int inner = heads * headDim;
        return new ShapesModelConfigs
        {
            Vae = new AutoencoderKLConfig
            {
                InChannels = 3,
                OutChannels = 3,
                DownBlockTypes = Enumerable.Repeat("DownEncoderBlock2D", vaeChannels.Length).ToArray(),
                UpBlockTypes = Enumerable.Repeat("UpDecoderBlock2D", vaeChannels.Length).ToArray(),
                BlockOutChannels = vaeChannels,
                LayersPerBlock = 1,
                LatentChannels = 16,
                NormNumGroups = vaeGroups,
                SampleSize = sampleSize << (vaeChannels.Length - 1),
                ScalingFactor = 1.0,
                ShiftFactor = 0.0,
                UseQuantConv = false,
                UsePostQuantConv = false,
                MidBlockAddAttention = false,
            },
            Transformer = new SD3Transformer2DModelConfig
            {
                SampleSize = sampleSize,
                PatchSize = 2,
                InChannels = 16,
                OutChannels = 16,
                NumLayers = layers,
                AttentionHeadDim = headDim,
                NumAttentionHeads = heads,
                JointAttentionDim = 2 * clipHidden,
                CaptionProjectionDim = inner,
                PooledProjectionDim = 2 * clipHidden,
                PosEmbedMaxSize = sampleSize / 2 * 2,
                QkNorm = "rms_norm",
                DualAttentionLayers = [],
            },
            TextEncoder = clip,
            TextEncoder2 = clip with { HiddenAct = "gelu" },
            // No shift toward noise: SD3's 3.0 is for 1024-pixel images (64x more tokens). With it, 128-pixel training saw
            // sigma < 0.3 in under 3% of its samples and the model smeared the edges it should have refined there.
            Scheduler = new FlowMatchEulerDiscreteSchedulerConfig { Shift = 1.0 },
        };
    }
}
