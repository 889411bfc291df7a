using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// SDXL's micro-conditioning (add_time_ids and their check against the UNet) and the denoising_start / denoising_end cutoffs.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>diffusers' <c>denoising_value_valid</c>: a fraction strictly inside (0, 1).</summary>
    private static bool DenoisingValueValid(double? value) => value is > 0 and < 1;

    /// <summary>The timestep a <c>denoising_start</c> / <c>denoising_end</c> fraction cuts the schedule at:
    /// <c>int(round(T - fraction * T))</c>, Python's round (half to even) on the same float64 value.</summary>
    private static int DiscreteTimestepCutoff(double fraction, IDiffusionScheduler scheduler)
    {
        int t = scheduler.NumTrainTimesteps;
        return (int)Math.Round(t - fraction * t, MidpointRounding.ToEven);
    }

    /// <summary>
    /// SDXL's add_time_ids as the UNet gets them, [batch (x2 under CFG, negatives first), 5 or 6], after diffusers'
    /// <c>_get_add_time_ids</c> and the layout each mode gives them. Text-to-image: original size, crop corner, target
    /// size; negative ids only when both negative sizes are given, and the [negative; positive] pair repeated per image.
    /// Image-to-image and inpainting: with <c>requires_aesthetics_score</c> original size, crop corner and aesthetic
    /// score (5), else as text-to-image (6, the negative ids with the positive crop corner, as diffusers builds them);
    /// negative sizes default to the positive ones; all negatives, then all positives. InstructPix2Pix: text-to-image's
    /// ids for every pass (three under guidance). Perturbed-attention guidance adds the positive ids once more.
    /// </summary>
    private Tensor TimeIds(StableDiffusionRequest r, int height, int width, bool cfg, int batch, ScalarType dtype, int pooledWidth)
    {
        var (oh, ow) = r.OriginalSize ?? (height, width);
        var (th, tw) = r.TargetSize ?? (height, width);
        var (ct, cl) = r.CropsCoordsTopLeft;
        // diffusers' SDXL ControlNet inpainting builds the negative ids from the positive crop corner (it has no negative one).
        var (nct, ncl) = IsXLControlNetInpaint(r) ? r.CropsCoordsTopLeft : r.NegativeCropsCoordsTopLeft;
        Tensor Row(double[] ids) => tensor(ids, [1, ids.Length], device: Components.Device).to(dtype);
        if (r is StableDiffusionImg2ImgRequest i)
        {
            var (noh, now) = r.NegativeOriginalSize ?? (oh, ow);
            var (nth, ntw) = r.NegativeTargetSize ?? (th, tw);
            double[] positive, negative;
            if (Components.RequiresAestheticsScore)
            {
                positive = [oh, ow, ct, cl, i.AestheticScore];
                negative = [noh, now, nct, ncl, i.NegativeAestheticScore];
            }
            else
            {
                positive = [oh, ow, ct, cl, th, tw];
                negative = [noh, now, ct, cl, nth, ntw];
            }
            CheckAddEmbedding(positive.Length, i, pooledWidth);
            var ids = Row(positive).repeat(batch, 1);
            // Perturbed-attention guidance: all negatives, all positives, all positives again (or the positives twice).
            if (PagOn(r)) return cfg ? cat([Row(negative).repeat(batch, 1), ids, ids], 0) : cat([ids, ids], 0);
            return cfg ? cat([Row(negative).repeat(batch, 1), ids], 0) : ids;
        }
        double[] plain = [oh, ow, ct, cl, th, tw];
        CheckAddEmbedding(plain.Length, null, pooledWidth);
        var pos = Row(plain);
        // InstructPix2Pix: the same ids for the three passes (diffusers concatenates them thrice, then repeats per image).
        if (r is StableDiffusionInstructPix2PixRequest) return pos.repeat(batch * (cfg ? 3 : 1), 1);
        var neg = r.NegativeOriginalSize is { } no && r.NegativeTargetSize is { } nt
            ? Row([no.Height, no.Width, nct, ncl, nt.Height, nt.Width]) : pos;
        // Perturbed-attention guidance: [negative, positive, positive] (or [positive, positive]), then repeated per image.
        if (PagOn(r)) return (cfg ? cat([neg, pos, pos], 0) : cat([pos, pos], 0)).repeat(batch, 1);
        return (cfg ? cat([neg, pos], 0) : pos).repeat(batch, 1);
    }

    /// <summary>
    /// <c>_get_add_time_ids</c>'s check: the UNet's add_embedding must take addition_time_embed_dim x (number of ids) +
    /// the pooled embedding's width. Image-to-image and inpainting (<paramref name="aesthetic"/> given), when the
    /// difference is exactly one id, say which way <c>requires_aesthetics_score</c> must be set (diffusers' two messages
    /// give the opposite advice to the setting that would fit; these name the one that does).
    /// </summary>
    private void CheckAddEmbedding(int idCount, StableDiffusionImg2ImgRequest? aesthetic, int pooledWidth)
    {
        var config = Components.Unet.Config;
        // diffusers: text_encoder_2's projection_dim, or the pooled embeddings' width without that encoder.
        int projection = Components.TextEncoder2?.Config.ProjectionDim ?? pooledWidth;
        int timeDim = config.AdditionTimeEmbedDim ?? 0;
        long passed = (long)timeDim * idCount + projection;
        if (config.ProjectionClassEmbeddingsInputDim is not { } expected)
            throw new ArgumentException("The UNet has no add_embedding (addition_embed_type \"text_time\"): it is not an SDXL UNet.");
        if (expected == passed) return;
        string head = $"The UNet's add_embedding takes a vector of {expected} features, but {idCount} time ids x {timeDim} + a {projection}-wide pooled embedding give {passed}.";
        if (aesthetic is not null && Math.Abs(expected - passed) == timeDim)
            throw new ArgumentException(Components.RequiresAestheticsScore
                ? $"{head} The UNet is conditioned on the target size, not an aesthetic score (as the SDXL base): set StableDiffusionComponents.RequiresAestheticsScore = false (model_index.json's requires_aesthetics_score) so that target_size {aesthetic.TargetSize?.ToString() ?? "(the output size)"} is used."
                : $"{head} The UNet is conditioned on an aesthetic score (as the SDXL refiner): set StableDiffusionComponents.RequiresAestheticsScore = true (model_index.json's requires_aesthetics_score) so that aesthetic_score {aesthetic.AestheticScore} and negative_aesthetic_score {aesthetic.NegativeAestheticScore} are used.");
        throw new ArgumentException($"{head} The model has an incorrect config: check the UNet's addition_time_embed_dim / projection_class_embeddings_input_dim and text_encoder_2's projection_dim{(aesthetic is null && Components.RequiresAestheticsScore ? " (this model conditions on an aesthetic score, as the SDXL refiner: use it with the image-to-image or inpainting pipeline)" : "")}.");
    }
}
