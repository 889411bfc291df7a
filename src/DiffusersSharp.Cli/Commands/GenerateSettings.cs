using System.ComponentModel;
using System.Globalization;
using DiffusersSharp.Hub;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Runtime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// What loads a model: the model, device, dtype, variant, hub access, offload, T5 and LoRA. Shared by the generation verbs
/// and <c>serve</c>; validated before any model is loaded.
/// </summary>
public class ModelSettings : CommandSettings
{
    private readonly string? _model;

    /// <summary>Model folder (diffusers layout) or hub repo id; the bundled shapes model when not given.</summary>
    [CommandOption("--model <MODEL>"), Description("Model folder in the diffusers layout, or a Hugging Face repo id (default: the bundled models/shapes-sd3).")]
    public string? Model { get => _model ?? BundledModel.Find(); init => _model = value; }

    /// <summary>Device.</summary>
    [CommandOption("--device <DEVICE>"), Description("cpu, cuda or cuda:N.")]
    public string Device { get; init; } = "cpu";

    /// <summary>Dtype.</summary>
    [CommandOption("--dtype <DTYPE>"), Description("float32, bfloat16 or float16.")]
    public string Dtype { get; init; } = "float32";

    /// <summary>Drop T5.</summary>
    [CommandOption("--no-t5"), Description("Do not load T5 (its embeddings become zeros), as text_encoder_3=None.")]
    public bool NoT5 { get; init; }

    /// <summary>Offload mode.</summary>
    [CommandOption("--offload <MODE>"), Description("none, or model: keep models on the CPU and move each to the device only while it runs (enable_model_cpu_offload).")]
    public string Offload { get; init; } = "none";

    /// <summary>Weights variant.</summary>
    [CommandOption("--variant <NAME>"), Description("Weights variant, e.g. fp16.")]
    public string? Variant { get; init; }

    /// <summary>Hub token.</summary>
    [CommandOption("--token <TOKEN>"), Description("Hugging Face token for gated models (default: HF_TOKEN or the saved token).")]
    public string? Token { get; init; }

    /// <summary>Hub revision.</summary>
    [CommandOption("--revision <REV>"), Description("Hub branch, tag or commit.")]
    public string? Revision { get; init; }

    /// <summary>LoRA files, in fuse order.</summary>
    [CommandOption("--lora <FILE>"), Description("A LoRA in diffusers' format (pytorch_lora_weights.safetensors as save_lora_weights writes it: transformer or unet, and text encoder parts) or, for SD 1.x / 2.x, SDXL and Flux, kohya's (civitai: lora_unet_ / lora_te_ keys; ComfyUI's diffusion_model. keys), or for Flux XLabs' or BFL's (FLUX.1-Canny-dev-lora / Depth-dev-lora, which make FLUX.1-dev a control model: give --control-image), or for Z-Image what diffusers' Z-Image loader reads (diffusion_model. module names, lora_down / lora_up with .alpha, PEFT's lora_A.default names; not kohya's lora_unet_ names), or for Sana, Lumina-Image 2.0, AuraFlow and CogView4 diffusers' transformer layout (Lumina's original diffusion_model. layout too), fused into the weights. A local file, or a file of a Hugging Face repo: hf://org/name/file.safetensors or its https://huggingface.co/org/name/blob/main/file.safetensors address (downloaded into the hub cache with --token). Repeatable: the LoRAs are fused one after another, each at its --lora-scale (as diffusers' load_lora_weights(adapter_name=...) for each, set_adapters(names, adapter_weights=scales), fuse_lora()).")]
    public string[]? Lora { get; init; }

    /// <summary>LoRA scales: one for every LoRA, or one per LoRA.</summary>
    [CommandOption("--lora-scale <S>"), Description("LoRA strength (default 1; diffusers' joint_attention_kwargs={\"scale\": S}, or fuse_lora(lora_scale=S)): once for every --lora, or once per --lora in the same order (diffusers' set_adapters adapter_weights).")]
    public string[]? LoraScale { get; init; }

    /// <summary>The --lora files with the scale each is fused at, in order (empty without --lora).</summary>
    public IReadOnlyList<(string File, double Scale)> Loras
    {
        get
        {
            var files = Lora ?? [];
            var scales = (LoraScale ?? []).Select(s => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
            return files.Select((file, i) => (file, scales.Length == 0 ? 1.0 : scales[scales.Length == 1 ? 0 : i])).ToList();
        }
    }

    /// <summary>Textual inversion embeddings: FILE or FILE:TOKEN, repeatable.</summary>
    [CommandOption("--textual-inversion <FILE[:TOKEN]>"), Description("SD 1.x / 2.x, SDXL and Flux: a textual inversion embedding in a .safetensors file (local, or a hub repo's: hf://org/name/file.safetensors), as diffusers' load_textual_inversion(FILE, token=TOKEN): diffusers' format (the token is the file's key unless :TOKEN is given), A1111 / kohya files (emb_params: give :TOKEN), or an SDXL file with clip_l and clip_g (both halves load, into the two encoders; :TOKEN required). Write the token in the prompt; a multi-vector embedding spells out as TOKEN TOKEN_1 ... as diffusers rewrites prompts. Repeatable. Pickle files (.bin, .pt) are refused: convert them to safetensors.")]
    public string[]? TextualInversion { get; init; }

    /// <summary>The --textual-inversion entries as (file, token or null), in order.</summary>
    public IReadOnlyList<(string File, string? Token)> TextualInversions => (TextualInversion ?? []).Select(ParseTextualInversion).ToList();

    /// <summary>FILE, or FILE:TOKEN (the last colon, when the text before it is a file or a hub file reference).</summary>
    internal static (string File, string? Token) ParseTextualInversion(string value)
    {
        if (File.Exists(value) || HubFileReference.TryParse(value, out _)) return (value, null);
        int colon = value.LastIndexOf(':');
        if (colon > 0 && (File.Exists(value[..colon]) || HubFileReference.TryParse(value[..colon], out _))) return (value[..colon], value[(colon + 1)..]);
        return (value, null);
    }

    /// <summary>Single-file checkpoint (SD3).</summary>
    [CommandOption("--single-file <FILE>"), Description("An original single-file checkpoint whose weights replace --model's: SD3 / SD3.5 (e.g. sd3.5_medium.safetensors: MMDiT and VAE) or SD 1.x / 2.x / SDXL in the LDM / SGM layout (e.g. v1-5-pruned-emaonly.safetensors, sd_xl_base_1.0.safetensors: UNet, and the VAE and text encoders it holds). --model (a folder or hub repo of the same family) still gives the configs, tokenizers, scheduler and whatever the file lacks. Not for Flux.")]
    public string? SingleFile { get; init; }

    /// <summary>IP-Adapter file (UNet, SD3 and FLUX.1 models).</summary>
    [CommandOption("--ip-adapter <FILE>"), Description("An IP-Adapter steering the image with an image prompt (generate: --ip-adapter-image; serve: each request's ip_adapter_image): SD 1.x / 2.x and SDXL, a file in h94/IP-Adapter's safetensors layout (e.g. hf://h94/IP-Adapter/models/ip-adapter_sd15.safetensors; the plain IP-Adapter and Plus); SD3 / SD3.5, InstantX/SD3.5-Large-IP-Adapter's (e.g. hf://guiyrt/InstantX-SD3.5-Large-IP-Adapter-diffusers/ip-adapter.safetensors); FLUX.1 text-to-image folders, XLabs-AI/flux-ip-adapter's (hf://XLabs-AI/flux-ip-adapter/ip_adapter.safetensors). A local file or a hub repo's. Its image encoder is the image_encoder folder beside the file (as diffusers' load_ip_adapter(repo, subfolder, weight_name) finds it; in the repo for a hub file) unless --ip-adapter-image-encoder names another; the SD3 and XLabs adapters have none beside them: name it.")]
    public string? IpAdapter { get; init; }

    /// <summary>The IP-Adapter's image encoder folder.</summary>
    [CommandOption("--ip-adapter-image-encoder <FOLDER>"), Description("With --ip-adapter: the image encoder (diffusers' image_encoder_folder / image_encoder_pretrained_model_name_or_path; config.json + model.safetensors; default: image_encoder beside the --ip-adapter file): a folder, hf://org/name/sub/folder or a hub repo id. CLIP for SD / SDXL (e.g. hf://h94/IP-Adapter/models/image_encoder for SDXL's ip-adapter_sdxl_vit-h) and Flux (openai/clip-vit-large-patch14, a whole CLIP model whose vision half is taken); SigLIP for SD3 (google/siglip-so400m-patch14-384, its vision tower).")]
    public string? IpAdapterImageEncoder { get; init; }

    /// <summary>The image encoder folder the IP-Adapter uses: the option, or image_encoder beside the file (in the same hub
    /// repo for a hub file).</summary>
    public string? IpAdapterImageEncoderFolder => IpAdapter is null ? null
        : IpAdapterImageEncoder ?? (HubFileReference.TryParse(IpAdapter, out var file)
            ? $"hf://{file!.RepoId}/{(file.Path.Contains('/') ? file.Path[..file.Path.LastIndexOf('/')] + "/" : "")}image_encoder"
            : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(IpAdapter))!, "image_encoder"));


    /// <inheritdoc />
    public override ValidationResult Validate()
    {
        string? error = Check();
        return error is null ? ValidationResult.Success() : ValidationResult.Error(error);
    }

    /// <summary>The first problem with the options, or null.</summary>
    protected virtual string? Check()
    {
        if (string.IsNullOrWhiteSpace(Model)) return $"--model is required (the bundled model {BundledModel.RelativePath} was not found).";
        foreach (var lora in Lora ?? [])
            if (!HubFileReference.TryParse(lora, out _) && !File.Exists(lora)) return $"--lora file not found: {lora}.";
        if (SingleFile is not null && !File.Exists(SingleFile)) return $"--single-file not found: {SingleFile}.";
        if (IpAdapterImageEncoder is not null && IpAdapter is null) return "--ip-adapter-image-encoder needs --ip-adapter.";
        if (IpAdapter is not null && !HubFileReference.TryParse(IpAdapter, out _) && !File.Exists(IpAdapter)) return $"--ip-adapter file not found: {IpAdapter}.";
        if (IpAdapter is not null && !HubFileReference.TryParse(IpAdapterImageEncoderFolder, out _) && !Directory.Exists(IpAdapterImageEncoderFolder)
            && !(IpAdapterImageEncoder is not null && Hub.ModelSource.IsRepoId(IpAdapterImageEncoder)))
            return $"--ip-adapter needs an image encoder: {IpAdapterImageEncoderFolder} does not exist (name one with --ip-adapter-image-encoder: a folder, hf://org/name/sub/folder or a repo id; CLIP for SD / SDXL and Flux, e.g. openai/clip-vit-large-patch14 for XLabs' Flux IP-Adapter; SigLIP for SD3, google/siglip-so400m-patch14-384).";
        foreach (var (file, token) in TextualInversions)
        {
            if (token is { Length: 0 }) return $"--textual-inversion {file}: the token after ':' is empty.";
            if (HubFileReference.TryParse(file, out _)) continue; // read once fetched, before any weights load
            try
            {
                DiffusersSharp.Loaders.TextualInversion.IsSdxlFile(file); // missing, pickle or not safetensors: refused here
            }
            catch (Exception e) when (e is IOException or ArgumentException) { return $"--textual-inversion: {e.Message}"; }
        }
        if (LoraScale is { Length: > 0 } loraScales)
        {
            int loras = Lora?.Length ?? 0;
            if (loras == 0) return "--lora-scale needs --lora.";
            if (loraScales.Length != 1 && loraScales.Length != loras)
                return $"--lora-scale is given {loraScales.Length} times for {loras} --lora files: give it once (for all) or once per --lora.";
            foreach (var text in loraScales)
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double loraScale) || !double.IsFinite(loraScale))
                    return $"--lora-scale must be a finite number, got '{text}'.";
        }
        if (Device.Trim().ToLowerInvariant() is not ("cpu" or "cuda") && !Device.Trim().ToLowerInvariant().StartsWith("cuda:", StringComparison.Ordinal))
            return $"--device must be cpu, cuda or cuda:N, got '{Device}'.";
        if (Offload is not ("none" or "model")) return $"--offload must be none or model, got '{Offload}'.";
        try
        {
            TorchDtypes.Parse(Dtype);
        }
        catch (ArgumentException e) { return e.Message; }
        return null;
    }
}

/// <summary>Options shared by <c>generate</c>, <c>img2img</c> and <c>inpaint</c>; validated before any model is loaded.</summary>
public class GenerateSettings : ModelSettings
{
    /// <summary>The prompt.</summary>
    [CommandOption("--prompt <PROMPT>"), Description("What to draw.")]
    public string? Prompt { get; init; }

    /// <summary>PixArt: run the size as given instead of at the closest trained aspect ratio.</summary>
    [CommandOption("--no-resolution-binning"), Description("PixArt: run --width x --height as given (multiples of 16) instead of diffusers' default use_resolution_binning, which generates at the model's closest trained aspect ratio and resizes the image back to the requested size.")]
    public bool NoResolutionBinning { get; init; }

    /// <summary>Prompt for CLIP-G (default: --prompt).</summary>
    [CommandOption("--prompt-2 <PROMPT>"), Description("Prompt for the second CLIP encoder (default: --prompt).")]
    public string? Prompt2 { get; init; }

    /// <summary>Prompt for T5 (default: --prompt).</summary>
    [CommandOption("--prompt-3 <PROMPT>"), Description("Prompt for T5 (default: --prompt).")]
    public string? Prompt3 { get; init; }

    /// <summary>Negative prompt.</summary>
    [CommandOption("--negative-prompt <TEXT>"), Description("What to steer away from (used when guidance > 1).")]
    public string? NegativePrompt { get; init; }

    /// <summary>Precomputed embeddings file.</summary>
    [CommandOption("--prompt-embeds <FILE>"), Description("A .safetensors file with prompt_embeds and pooled_prompt_embeds (and optionally negative_*), instead of --prompt. Chroma: prompt_embeds with prompt_attention_mask (negative_* likewise). Z-Image: prompt_embeds [[L, D]] (one prompt; [[N, L, D]]: N prompts) or prompt_embeds.0, prompt_embeds.1, ... (prompts of their own lengths), each the rows of a prompt's real tokens (diffusers' pipe.encode_prompt lists), and likewise negative_prompt_embeds, needed with --guidance above 1; the Qwen3 text encoder is then not loaded unless --negative-prompt is given. Qwen-Image: prompt_embeds [[L, D]] or [[N, L, D]] (zero-padded) with an optional prompt_embeds_mask [[L]] / [[N, L]] (1 = a real token), likewise negative_prompt_embeds / negative_prompt_embeds_mask (CFG runs only with a negative); the Qwen2.5-VL text encoder is then not loaded unless --negative-prompt is given.")]
    public string? PromptEmbeds { get; init; }

    /// <summary>Denoising steps.</summary>
    [CommandOption("--steps <N>"), Description("Denoising steps (default 28 for generate, 50 for img2img and inpaint; the pipeline's for the other families, e.g. 50 for Z-Image, where Z-Image-Turbo wants 9 with --guidance 0).")]
    public int? Steps { get; init; }

    /// <summary>Guidance scale.</summary>
    [CommandOption("--guidance <SCALE>"), Description("Classifier-free guidance scale (default: the pipeline's, 7.0 for SD3, 7.5 for SD 1.x / 2.x, 5.0 for SDXL, Chroma and Z-Image; 1 turns it off). Z-Image-Turbo is distilled for --guidance 0 with --steps 9. Qwen-Image: diffusers' true_cfg_scale (default 4), applied only with --negative-prompt (\" \" enables it without a real one).")]
    public string? Guidance { get; init; }

    /// <summary>Seed.</summary>
    [CommandOption("--seed <SEED>"), Description("Random seed (default: random, written into the PNG).")]
    public long? Seed { get; init; }

    /// <summary>Width.</summary>
    [CommandOption("--width <W>"), Description("Width in pixels, a multiple of 8 (16 for SD3; default: the model's, e.g. 1024 for SD3 and SDXL, 512 for SD 1.5).")]
    public int? Width { get; init; }

    /// <summary>Height.</summary>
    [CommandOption("--height <H>"), Description("Height in pixels, a multiple of 8 (16 for SD3; default: the model's).")]
    public int? Height { get; init; }

    /// <summary>Images to generate.</summary>
    [CommandOption("--num-images <N>"), Description("Images per prompt; out.png becomes out-1.png ... out-N.png.")]
    public int NumImages { get; init; } = 1;

    /// <summary>T5 sequence length.</summary>
    [CommandOption("--max-sequence-length <N>"), Description("T5 tokens (at most 512, default 256; Flux, Chroma 512). Z-Image: Qwen3 tokens with the chat template around the prompt (default 512). Qwen-Image: the prompt's Qwen2.5-VL tokens after the template's system turn (default 512).")]
    public int? MaxSequenceLength { get; init; }

    /// <summary>Output file.</summary>
    [CommandOption("--output <FILE>"), Description("Output image (.png with the parameters in a text chunk, or .jpg).")]
    public string Output { get; init; } = "out.png";

    /// <summary>CLIP skip.</summary>
    [CommandOption("--clip-skip <N>"), Description("CLIP layers to skip from the end (positive prompt only).")]
    public int? ClipSkip { get; init; }

    /// <summary>Skip-layer guidance layers.</summary>
    [CommandOption("--skip-layers <LIST>"), Description("Skip-layer guidance: transformer blocks to skip, e.g. 7,8,9 (generate only).")]
    public string? SkipLayers { get; init; }

    /// <summary>Generator device.</summary>
    [CommandOption("--generator-device <DEVICE>"), Description("Where the seed's noise is drawn: cpu (same image on every device, default) or cuda.")]
    public string GeneratorDevice { get; init; } = "cpu";

    /// <summary>DDIM's eta, TCD's gamma (UNet models).</summary>
    [CommandOption("--eta <ETA>"), Description("SD 1.x / 2.x, SDXL and PixArt with the DDIM or TCD scheduler: the noise of each step (DDIM's eta, TCD's gamma), 0 (default, deterministic) to 1.")]
    public string? Eta { get; init; }

    /// <summary>Guidance rescale (UNet models).</summary>
    [CommandOption("--guidance-rescale <R>"), Description("SD 1.x / 2.x and SDXL: rescale the guided prediction toward the text prediction's spread, 0 (default) to 1 (0.7 is common for zero-SNR models).")]
    public string? GuidanceRescale { get; init; }

    /// <summary>FreeU's four factors (UNet models).</summary>
    [CommandOption("--freeu <S1,S2,B1,B2>"), Description("SD 1.x / 2.x and SDXL: FreeU (diffusers' pipe.enable_freeu(s1, s2, b1, b2)): the backbone features of the two lowest-resolution up blocks amplified by b1 / b2, their skip features' low frequencies damped by s1 / s2. FreeU's suggestions: SD 1.4 0.9,0.2,1.2,1.4; SD 1.5 0.9,0.2,1.5,1.6; SD 2.1 0.9,0.2,1.4,1.6; SDXL 0.6,0.4,1.1,1.2. A 0 among them leaves it off, as in diffusers.")]
    public string? FreeU { get; init; }

    /// <summary>Perturbed-attention guidance's scale (UNet text-to-image).</summary>
    [CommandOption("--pag-scale <S>"), Description("SD 1.x / 2.x and SDXL (generate, img2img, inpaint) and SD3 / SD3.5 (generate, img2img): Perturbed-Attention Guidance (diffusers' StableDiffusionPAGPipeline, StableDiffusionXLPAGPipeline, their Img2Img and Inpaint twins, StableDiffusion3PAGPipeline and StableDiffusion3PAGImg2ImgPipeline; pag_scale, 3.0 is diffusers' default): the denoiser also predicts with the attention of --pag-layers perturbed (UNet: the self-attention replaced by the identity; SD3: each image token attends to itself and the text only), and the result is pushed away from that prediction by S. Works with and without CFG (--guidance 1). 0 leaves it off.")]
    public string? PagScale { get; init; }

    /// <summary>The layers perturbed-attention guidance perturbs (with --pag-scale).</summary>
    [CommandOption("--pag-layers <LAYERS>"), Description("With --pag-scale: the layers to perturb, comma-separated regular expressions over module names as diffusers' pag_applied_layers. UNet: its self-attention layers (default mid; e.g. mid,down_blocks.1 or up_blocks.0.attentions.1). SD3: the transformer's transformer_blocks.N.attn (default blocks.1, which as in diffusers also finds blocks 10-19; transformer_blocks\\.1\\.attn$ is block 1 alone; an SD3.5 dual-attention block's attn2 is refused).")]
    public string? PagLayers { get; init; }

    /// <summary>Perturbed-attention guidance's adaptive scale (with --pag-scale).</summary>
    [CommandOption("--pag-adaptive-scale <A>"), Description("With --pag-scale: diffusers' pag_adaptive_scale (default 0, off): the scale at timestep t is max(S - A x (1000 - t), 0), fading PAG out toward the end.")]
    public string? PagAdaptiveScale { get; init; }

    /// <summary>The parsed --pag-scale, or null without it.</summary>
    public double? PagScaleValue => PagScale is null ? null : double.Parse(PagScale, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The parsed --pag-adaptive-scale (0 without it).</summary>
    public double PagAdaptiveScaleValue => PagAdaptiveScale is null ? 0 : double.Parse(PagAdaptiveScale, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The --pag-layers ids, or null for the PAG pipeline's default (UNet ["mid"], SD3 ["blocks.1"]).</summary>
    public IReadOnlyList<string>? PagLayerList => PagLayers?.Split(',').Select(l => l.Trim()).ToArray();

    /// <summary>The parsed --freeu, or null.</summary>
    public FreeU? FreeUValue => FreeU is null || ParseFreeU(FreeU).Values is not { } v ? null : new FreeU(v[0], v[1], v[2], v[3]);

    /// <summary>Four finite numbers separated by commas, or the reason they are not.</summary>
    private static (double[]? Values, string? Error) ParseFreeU(string text)
    {
        var parts = text.Split(',');
        var values = new double[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!double.TryParse(parts[i].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]) || !double.IsFinite(values[i]))
                return (null, $"--freeu takes four numbers s1,s2,b1,b2 (e.g. 0.9,0.2,1.2,1.4), got '{text}'.");
        return parts.Length == 4 ? (values, null) : (null, $"--freeu takes four numbers s1,s2,b1,b2 (e.g. 0.9,0.2,1.2,1.4), got {parts.Length}: '{text}'.");
    }

    /// <summary>The parsed eta, or null.</summary>
    public double? EtaValue => Eta is null ? null : double.Parse(Eta, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The parsed guidance rescale, or null.</summary>
    public double? GuidanceRescaleValue => GuidanceRescale is null ? null : double.Parse(GuidanceRescale, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>Step previews.</summary>
    [CommandOption("--preview-every <N>"), Description("Also write the image decoded after every N steps, as out.step-N.png (the VAE decodes the latents so far).")]
    public int? PreviewEvery { get; init; }

    /// <summary>Scheduler (UNet models).</summary>
    [CommandOption("--scheduler <NAME>"), Description("SD 1.x / 2.x, SDXL and PixArt: the sampler, pndm, ddim, euler, euler_karras, euler_a, lms, dpmpp_2m, dpmpp_2m_karras, dpmpp_2m_sde, dpmpp_2m_sde_karras, unipc, heun, kdpm2, kdpm2_a, dpmpp_singlestep, deis, lcm (LCM-distilled models or LCM-LoRAs: few steps, guidance 1 to 2), ddpm, tcd (TCD LoRAs: few steps, gamma via --eta, e.g. 0.3), ipndm, or for EDM-trained models (Playground v2.5, CosXL) edm_euler, edm_dpmpp_2m, edm_dpmpp_2m_sde; or a diffusers scheduler class, e.g. EDMEulerScheduler (default: the model's).")]
    public string? Scheduler { get; init; }

    /// <summary>Z-Image's and Lumina-Image 2.0's cfg_normalization.</summary>
    [CommandOption("--cfg-normalization <F>"), Description("Z-Image, with --guidance above 1: cap each guided prediction's norm at F times the conditional prediction's (diffusers' cfg_normalization, a bool there: True is 1; default 0, off). Lumina-Image 2.0: 1 (the default) rescales each guided prediction to the conditional prediction's norm, 0 turns that off (diffusers' cfg_normalization).")]
    public string? CfgNormalization { get; init; }

    /// <summary>Z-Image's cfg_truncation, Lumina-Image 2.0's cfg_trunc_ratio.</summary>
    [CommandOption("--cfg-truncation <F>"), Description("Z-Image, with --guidance above 1: run the steps whose normalized time (1000 - t) / 1000 is above F without guidance (diffusers' cfg_truncation; default 1: never). Lumina-Image 2.0: run step i (from 0) without guidance once (i + 1) / steps is above F (diffusers' cfg_trunc_ratio; default 1: never; its model card uses 0.25).")]
    public string? CfgTruncation { get; init; }

    /// <summary>The parsed --cfg-normalization, or null.</summary>
    public double? CfgNormalizationValue => CfgNormalization is null ? null : double.Parse(CfgNormalization, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The parsed --cfg-truncation, or null.</summary>
    public double? CfgTruncationValue => CfgTruncation is null ? null : double.Parse(CfgTruncation, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>True CFG scale (Flux).</summary>
    [CommandOption("--true-cfg <SCALE>"), Description("Flux: diffusers' true_cfg_scale; above 1 with --negative-prompt, each step runs the transformer for the negative prompt too (default 1: off). --guidance is Flux's embedded guidance (default 3.5; 7.0 for img2img and inpaint, as diffusers).")]
    public string? TrueCfg { get; init; }

    /// <summary>ControlNet folders or hub repo ids (UNet and SD3 models), in order.</summary>
    [CommandOption("--controlnet <FOLDER_OR_REPO>"), Description("SD 1.x / 2.x, SDXL and FLUX.1-dev / schnell (generate, img2img, inpaint) and SD3 / SD3.5 (generate; inpaint with one inpainting ControlNet such as alimama-creative/SD3-Controlnet-Inpainting, --control-image then being the image to inpaint, the same file as --image): a diffusers ControlNet folder or hub repo id (e.g. lllyasviel/sd-controlnet-canny, InstantX/SD3-Controlnet-Canny, InstantX/FLUX.1-dev-Controlnet-Canny) steering the image with --control-image. Repeat it for several ControlNets (their residuals are summed); the repeated --control-image, --controlnet-scale, --control-start and --control-end pair with them in order.")]
    public string[]? ControlNet { get; init; }

    /// <summary>The control images, one per ControlNet.</summary>
    [CommandOption("--control-image <FILE>"), Description("With --controlnet: the control image (edge map, depth map, pose...), one per --controlnet in the same order, resized to the output size; generate without --width / --height takes the (first) image's size (rounded down to 8) for SD 1.x / 2.x and SDXL, the model's default size for SD3 and Flux (as diffusers). Without --controlnet, for a FLUX.1 control model (FLUX.1-Canny-dev, FLUX.1-Depth-dev: model_index FluxControlPipeline; or FLUX.1-dev with --lora FLUX.1-Canny-dev-lora / Depth-dev-lora): its Canny edge map or depth map, once (diffusers' FluxControl[[Img2Img|Inpaint]]Pipeline control_image).")]
    public string[]? ControlImage { get; init; }

    /// <summary>ControlNet conditioning scales.</summary>
    [CommandOption("--controlnet-scale <S>"), Description("With --controlnet: how strongly it steers (diffusers' controlnet_conditioning_scale; default 1.0 for generate, 0.8 for img2img, 0.5 for inpaint, 1.0 for SDXL and SD3 inpaint and for every Flux verb). Once for all ControlNets or once per --controlnet.")]
    public string[]? ControlNetScale { get; init; }

    /// <summary>ControlNet guidance starts.</summary>
    [CommandOption("--control-start <F>"), Description("With --controlnet: the fraction of the steps after which it starts to apply (default 0). Once for all ControlNets or once per --controlnet.")]
    public string[]? ControlStart { get; init; }

    /// <summary>ControlNet guidance ends.</summary>
    [CommandOption("--control-end <F>"), Description("With --controlnet: the fraction of the steps after which it stops applying (default 1). Once for all ControlNets or once per --controlnet.")]
    public string[]? ControlEnd { get; init; }

    /// <summary>ControlNet-Union control modes, one per control image.</summary>
    [CommandOption("--control-mode <NAME_OR_INDEX>"), Description("With a ControlNet-Union --controlnet (SDXL; e.g. xinsir/controlnet-union-sdxl-1.0, brad-twinkl/controlnet-union-sdxl-1.0-promax): the control type of each --control-image, in the same order (diffusers' control_mode): openpose 0, depth 1, hed / pidi / scribble / ted 2, canny / lineart / anime_lineart / mlsd 3, normal 4, segment 5, tile 6, repaint 7 (6 and 7: ProMax). One ControlNet-Union fuses several conditions: repeat --control-image and --control-mode (--controlnet-scale, --control-start and --control-end then go once for all or once per condition); with several ControlNet-Unions, one image and mode each. Required for ControlNet-Union folders, refused for other ControlNets.")]
    public string[]? ControlMode { get; init; }

    /// <summary>ControlNet guess mode.</summary>
    [CommandOption("--guess-mode"), Description("With --controlnet, SD 1.x / 2.x and SDXL: diffusers' guess_mode (the ControlNets see the conditional half only; guidance 3 to 5 recommended).")]
    public bool GuessMode { get; init; }

    /// <summary>T2I-Adapter folders or hub repo ids (UNet models), in order.</summary>
    [CommandOption("--adapter <FOLDER_OR_REPO>"), Description("SD 1.x / 2.x and SDXL, generate only: a diffusers T2I-Adapter folder or hub repo id (e.g. TencentARC/t2iadapter_canny_sd15v2, TencentARC/t2i-adapter-canny-sdxl-1.0) steering the image with --adapter-image (diffusers' StableDiffusion[[XL]]AdapterPipeline). Repeat it for several adapters (diffusers' MultiAdapter: their feature maps are summed, weighted by --adapter-scale); the repeated --adapter-image and --adapter-scale pair with them in order. Not with --controlnet.")]
    public string[]? Adapter { get; init; }

    /// <summary>The adapter images, one per adapter.</summary>
    [CommandOption("--adapter-image <FILE>"), Description("With --adapter: the adapter's condition image (sketch, canny edges, depth map, pose...), one per --adapter in the same order, resized to the output size; read as RGB, or as grayscale for an adapter with in_channels 1. Without --width / --height the output takes the (first) image's size, rounded down to the adapter's downscale factor (8; 16 for SDXL adapters).")]
    public string[]? AdapterImage { get; init; }

    /// <summary>Adapter conditioning scales.</summary>
    [CommandOption("--adapter-scale <S>"), Description("With --adapter: how strongly it steers (diffusers' adapter_conditioning_scale, default 1.0; with several adapters, each one's weight in their sum). Once for all adapters or once per --adapter.")]
    public string[]? AdapterScale { get; init; }

    /// <summary>Adapter conditioning factor (SDXL).</summary>
    [CommandOption("--adapter-factor <F>"), Description("With --adapter, SDXL only: the fraction of the steps the adapters steer, in [[0, 1]] (diffusers' adapter_conditioning_factor, default 1: all).")]
    public string? AdapterFactor { get; init; }

    /// <summary>The T2I-Adapters, or an empty list.</summary>
    public IReadOnlyList<string> Adapters => Adapter ?? [];

    /// <summary>The parsed --adapter-scale values (one for all, or one per adapter), or null.</summary>
    public double[]? AdapterScaleValues => ParseAll(AdapterScale);

    /// <summary>The parsed --adapter-factor, or null.</summary>
    public double? AdapterFactorValue => AdapterFactor is null ? null : double.Parse(AdapterFactor, NumberStyles.Float, CultureInfo.InvariantCulture);

    private string? CheckAdapter()
    {
        if (!Given(Adapter))
        {
            string? stray = Given(AdapterImage) ? "--adapter-image" : Given(AdapterScale) ? "--adapter-scale" : AdapterFactor is not null ? "--adapter-factor" : null;
            return stray is null ? null : $"{stray} needs --adapter.";
        }
        if (this is Img2ImgSettings)
            return "--adapter applies to generate only (diffusers' T2I-Adapter pipelines are text-to-image; it has no adapter image-to-image or inpainting pipeline).";
        if (Given(ControlNet))
            return "--adapter and --controlnet cannot be combined (diffusers has no pipeline that runs T2I-Adapters and ControlNets together).";
        int n = Adapter!.Length;
        if (!Given(AdapterImage)) return "--adapter needs --adapter-image.";
        if (AdapterImage!.Length != n)
            return $"{n} --adapter take {n} --adapter-image (one per adapter, in the same order), got {AdapterImage.Length}.";
        foreach (var image in AdapterImage)
            if (string.IsNullOrWhiteSpace(image) || !File.Exists(image)) return $"--adapter-image not found: {image}.";
        if (Given(AdapterScale))
        {
            if (AdapterScale!.Length != 1 && AdapterScale.Length != n) return $"--adapter-scale is given once for all adapters or once per --adapter ({n}), got {AdapterScale.Length}.";
            foreach (var value in AdapterScale)
                if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                    return $"--adapter-scale must be a finite number, got '{value}'.";
        }
        if (AdapterFactor is not null && (!double.TryParse(AdapterFactor, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) || !(f >= 0 && f <= 1)))
            return $"--adapter-factor must be a number in [0, 1], got '{AdapterFactor}'.";
        return null;
    }

    /// <summary>A FLUX.1-Redux folder or repo.</summary>
    [CommandOption("--redux <FOLDER_OR_REPO>"), Description("FLUX.1 models: a FLUX.1-Redux prior (diffusers' FluxPriorReduxPipeline; a folder or hub repo such as black-forest-labs/FLUX.1-Redux-dev) that turns --redux-image into the prompt embeddings of the run (image variation). With --prompt (and --prompt-2) the base model's text encoders encode it inside the prior, once per image, as diffusers' experimental prompt input; without it the text part is zeros, as diffusers'. --negative-prompt with --true-cfg is encoded by the base model as usual. Not with --prompt-embeds.")]
    public string? Redux { get; init; }

    /// <summary>The Redux images.</summary>
    [CommandOption("--redux-image <FILE>"), Description("With --redux: an image to vary (PNG or JPEG); repeat for several, whose embeddings are weighted by the scales and summed.")]
    public string[]? ReduxImage { get; init; }

    /// <summary>The Redux prompt_embeds_scale.</summary>
    [CommandOption("--redux-scale <S>"), Description("With --redux: the weight of each image's text + image tokens (diffusers' prompt_embeds_scale, default 1.0), once for all images or once per --redux-image.")]
    public string[]? ReduxScale { get; init; }

    /// <summary>The Redux pooled_prompt_embeds_scale.</summary>
    [CommandOption("--redux-pooled-scale <S>"), Description("With --redux: the weight of each image's pooled embedding (diffusers' pooled_prompt_embeds_scale, default 1.0), once for all images or once per --redux-image.")]
    public string[]? ReduxPooledScale { get; init; }

    /// <summary>The parsed --redux-scale values (one for all, or one per image), or null.</summary>
    public double[]? ReduxScaleValues => ParseAll(ReduxScale);

    /// <summary>The parsed --redux-pooled-scale values, or null.</summary>
    public double[]? ReduxPooledScaleValues => ParseAll(ReduxPooledScale);

    private string? CheckRedux()
    {
        if (Redux is null)
        {
            string? stray = Given(ReduxImage) ? "--redux-image" : Given(ReduxScale) ? "--redux-scale" : Given(ReduxPooledScale) ? "--redux-pooled-scale" : null;
            return stray is null ? null : $"{stray} needs --redux.";
        }
        if (!Hub.ModelSource.IsRepoId(Redux) && !HubFileReference.TryParse(Redux, out _) && !Directory.Exists(Redux))
            return $"--redux folder not found: {Redux} (a FLUX.1-Redux folder in the diffusers layout, or a hub repo id such as black-forest-labs/FLUX.1-Redux-dev).";
        if (!Given(ReduxImage)) return "--redux needs --redux-image (one or more images).";
        foreach (var image in ReduxImage!)
            if (string.IsNullOrWhiteSpace(image) || !File.Exists(image)) return $"--redux-image not found: {image}.";
        if (PromptEmbeds is not null) return "--redux and --prompt-embeds cannot be combined: the Redux prior makes the prompt embeddings (give --prompt to encode a prompt inside it).";
        int n = ReduxImage.Length;
        foreach (var (name, values) in new[] { ("--redux-scale", ReduxScale), ("--redux-pooled-scale", ReduxPooledScale) })
        {
            if (!Given(values)) continue;
            if (values!.Length != 1 && values.Length != n) return $"{name} is given once for all images or once per --redux-image ({n}), got {values.Length}.";
            foreach (var value in values)
                if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                    return $"{name} must be a finite number, got '{value}'.";
        }
        return null;
    }

    /// <summary>FLUX.2 [klein]'s reference images.</summary>
    [CommandOption("--reference-image <FILE>"), Description("FLUX.2 [[klein]]: a reference image the result is conditioned on at every step (multi-reference editing; diffusers' image list of Flux2KleinPipeline, after img2img's --image; inpaint takes one, diffusers' image_reference). Repeatable. Each at least 64 pixels a side; the first one sets generate's size unless --width / --height are given.")]
    public string[]? ReferenceImage { get; init; }

    /// <summary>The reference images, or an empty list.</summary>
    public IReadOnlyList<string> ReferenceImages => ReferenceImage ?? [];

    /// <summary>The IP-Adapter's image prompt.</summary>
    [CommandOption("--ip-adapter-image <FILE>"), Description("With --ip-adapter: the image prompt (diffusers' ip_adapter_image).")]
    public string? IpAdapterImage { get; init; }

    /// <summary>The IP-Adapter scale.</summary>
    [CommandOption("--ip-adapter-scale <S>"), Description("With --ip-adapter: the weight of the image prompt (diffusers' set_ip_adapter_scale; default 1.0, SD3 0.5).")]
    public string? IpAdapterScale { get; init; }

    /// <summary>The parsed --ip-adapter-scale, or null.</summary>
    public double? IpAdapterScaleValue => IpAdapterScale is null ? null : double.Parse(IpAdapterScale, NumberStyles.Float, CultureInfo.InvariantCulture);

    private string? CheckIpAdapter()
    {
        if (IpAdapter is null)
        {
            string? stray = IpAdapterImage is not null ? "--ip-adapter-image" : IpAdapterScale is not null ? "--ip-adapter-scale" : null;
            return stray is null ? null : $"{stray} needs --ip-adapter.";
        }
        if (IpAdapterImage is null) return "--ip-adapter needs --ip-adapter-image.";
        if (!File.Exists(IpAdapterImage)) return $"--ip-adapter-image not found: {IpAdapterImage}.";
        if (IpAdapterScale is not null && (!double.TryParse(IpAdapterScale, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v)))
            return $"--ip-adapter-scale must be a finite number, got '{IpAdapterScale}'.";
        return null;
    }

    private static bool Given(string[]? values) => values is { Length: > 0 };

    private static double[]? ParseAll(string[]? values) =>
        Given(values) ? values!.Select(v => double.Parse(v, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray() : null;

    /// <summary>The ControlNets, or an empty list.</summary>
    public IReadOnlyList<string> ControlNets => ControlNet ?? [];

    /// <summary>The parsed --control-mode values (ControlNet-Union), or null.</summary>
    public int[]? ControlModeValues => Given(ControlMode) ? ControlMode!.Select(ControlNetUnionMode.Parse).ToArray() : null;

    /// <summary>How many --controlnet-scale / --control-start / --control-end values "once per" means: one per condition
    /// (--control-image) for one ControlNet-Union, one per --controlnet otherwise.</summary>
    public int ControlSettingsCount => Given(ControlMode) && ControlNets.Count == 1 ? ControlImage?.Length ?? 0 : ControlNets.Count;

    /// <summary>The parsed --controlnet-scale values (one for all, or one per ControlNet), or null.</summary>
    public double[]? ControlNetScaleValues => ParseAll(ControlNetScale);

    /// <summary>The parsed --control-start values, or null.</summary>
    public double[]? ControlStartValues => ParseAll(ControlStart);

    /// <summary>The parsed --control-end values, or null.</summary>
    public double[]? ControlEndValues => ParseAll(ControlEnd);

    /// <summary>The parsed true CFG scale, or null.</summary>
    public double? TrueCfgScale => TrueCfg is null ? null : double.Parse(TrueCfg, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The parsed guidance scale, or null for the pipeline's default.</summary>
    public double? GuidanceScale => Guidance is null ? null : double.Parse(Guidance, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The parsed skip-layer list.</summary>
    public int[]? SkipLayerList => SkipLayers?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();

    private string? CheckControlNet()
    {
        if (!Given(ControlNet))
        {
            // One --control-image alone is a FLUX.1 control model's (FLUX.1-Canny-dev, Depth-dev): the model check refuses it for others.
            if (Given(ControlImage) && ControlImage!.Length > 1) return "--control-image is given once per --controlnet; without --controlnet (FLUX.1-Canny-dev / Depth-dev), once.";
            if (Given(ControlImage) && (string.IsNullOrWhiteSpace(ControlImage![0]) || !File.Exists(ControlImage[0]))) return $"--control-image not found: {ControlImage[0]}.";
            string? stray = Given(ControlNetScale) ? "--controlnet-scale"
                : Given(ControlStart) ? "--control-start" : Given(ControlEnd) ? "--control-end" : GuessMode ? "--guess-mode"
                : Given(ControlMode) ? "--control-mode" : null;
            return stray is null ? null : $"{stray} needs --controlnet.";
        }
        int n = ControlNet!.Length;
        if (!Given(ControlImage)) return "--controlnet needs --control-image.";
        if (Given(ControlMode))
        {
            // ControlNet-Union: one mode per control image; one ControlNet-Union takes any number of them.
            if (ControlMode!.Length != ControlImage!.Length)
                return $"--control-mode is given once per --control-image ({ControlImage.Length}), in the same order; got {ControlMode.Length}.";
            foreach (var mode in ControlMode)
            {
                try
                {
                    ControlNetUnionMode.Parse(mode);
                }
                catch (ArgumentException e) { return "--control-mode: " + e.Message; }
            }
        }
        if ((!Given(ControlMode) || n > 1) && ControlImage!.Length != n)
            return $"{n} --controlnet take {n} --control-image (one per ControlNet, in the same order), got {ControlImage.Length}.";
        int count = ControlSettingsCount;
        string per = count != n ? $"once per --control-image ({count})" : $"once per --controlnet ({n})";
        foreach (var image in ControlImage!)
            if (string.IsNullOrWhiteSpace(image) || !File.Exists(image)) return $"--control-image not found: {image}.";
        foreach (var (name, values) in new[] { ("--controlnet-scale", ControlNetScale), ("--control-start", ControlStart), ("--control-end", ControlEnd) })
        {
            if (!Given(values)) continue;
            if (values!.Length != 1 && values.Length != count) return $"{name} is given once for all ControlNets or {per}, got {values.Length}.";
            foreach (var value in values)
                if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                    return $"{name} must be a finite number, got '{value}'.";
        }
        double[] starts = ControlStartValues ?? [0], ends = ControlEndValues ?? [1];
        for (int i = 0; i < count; i++)
        {
            double start = starts[starts.Length == 1 ? 0 : i], end = ends[ends.Length == 1 ? 0 : i];
            if (start < 0 || end > 1 || start >= end) return $"--control-start and --control-end must satisfy 0 <= start < end <= 1, got {start} and {end}.";
        }
        return null;
    }

    /// <inheritdoc />
    protected override string? Check()
    {
        if (base.Check() is { } error) return error;
        if (Prompt is null && PromptEmbeds is null && Redux is null) return "--prompt is required (or --prompt-embeds, or --redux with --redux-image).";
        if (Prompt is not null && PromptEmbeds is not null) return "give either --prompt or --prompt-embeds, not both.";
        if (PromptEmbeds is not null && !File.Exists(PromptEmbeds)) return $"--prompt-embeds file not found: {PromptEmbeds}.";
        foreach (var reference in ReferenceImages)
            if (string.IsNullOrWhiteSpace(reference) || !File.Exists(reference)) return $"--reference-image not found: {reference}.";
        if (Steps is < 1) return $"--steps must be at least 1, got {Steps}.";
        if (Guidance is not null && (!double.TryParse(Guidance, NumberStyles.Float, CultureInfo.InvariantCulture, out double g) || !double.IsFinite(g)))
            return $"--guidance must be a finite number, got '{Guidance}'.";
        if (TrueCfg is not null && (!double.TryParse(TrueCfg, NumberStyles.Float, CultureInfo.InvariantCulture, out double tc) || !double.IsFinite(tc)))
            return $"--true-cfg must be a finite number, got '{TrueCfg}'.";
        if (CfgNormalization is not null && (!double.TryParse(CfgNormalization, NumberStyles.Float, CultureInfo.InvariantCulture, out double cn) || !double.IsFinite(cn) || cn < 0))
            return $"--cfg-normalization must be a finite number of at least 0 (0: off; diffusers' True is 1), got '{CfgNormalization}'.";
        if (CfgTruncation is not null && (!double.TryParse(CfgTruncation, NumberStyles.Float, CultureInfo.InvariantCulture, out double ct) || !double.IsFinite(ct)))
            return $"--cfg-truncation must be a finite number, got '{CfgTruncation}'.";
        if (Width is { } w && (w <= 0 || w % 8 != 0)) return $"--width must be a positive multiple of 8, got {w}.";
        if (Height is { } h && (h <= 0 || h % 8 != 0)) return $"--height must be a positive multiple of 8, got {h}.";
        if (NumImages < 1) return $"--num-images must be at least 1, got {NumImages}.";
        if (PreviewEvery is < 1) return $"--preview-every must be at least 1, got {PreviewEvery}.";
        if (Eta is not null && (!double.TryParse(Eta, NumberStyles.Float, CultureInfo.InvariantCulture, out double eta) || !(eta >= 0 && eta <= 1)))
            return $"--eta must be a number in [0, 1], got '{Eta}'.";
        if (GuidanceRescale is not null && (!double.TryParse(GuidanceRescale, NumberStyles.Float, CultureInfo.InvariantCulture, out double rescale) || !(rescale >= 0 && rescale <= 1)))
            return $"--guidance-rescale must be a number in [0, 1], got '{GuidanceRescale}'.";
        if (FreeU is not null && ParseFreeU(FreeU).Error is { } freeUError) return freeUError;
        if (PagScale is not null && (!double.TryParse(PagScale, NumberStyles.Float, CultureInfo.InvariantCulture, out double pag) || !double.IsFinite(pag) || pag < 0))
            return $"--pag-scale must be a finite number >= 0, got '{PagScale}'.";
        if (PagAdaptiveScale is not null && (!double.TryParse(PagAdaptiveScale, NumberStyles.Float, CultureInfo.InvariantCulture, out double pagAdaptive) || !double.IsFinite(pagAdaptive) || pagAdaptive < 0))
            return $"--pag-adaptive-scale must be a finite number >= 0, got '{PagAdaptiveScale}'.";
        if (PagScale is null && (PagLayers is not null || PagAdaptiveScale is not null))
            return $"{(PagLayers is not null ? "--pag-layers" : "--pag-adaptive-scale")} needs --pag-scale (Perturbed-Attention Guidance is off without it).";
        if (PagLayerList is { } pagLayers && pagLayers.Any(string.IsNullOrEmpty)) return $"--pag-layers takes comma-separated layer names (e.g. mid,down_blocks.1), got '{PagLayers}'.";
        if (MaxSequenceLength is < 1 or > 512) return $"--max-sequence-length must be in [1, 512], got {MaxSequenceLength}.";
        if (ClipSkip is < 0) return $"--clip-skip must not be negative, got {ClipSkip}.";
        try
        {
            _ = SkipLayerList;
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException) { return e.Message; }
        if (CheckControlNet() is { } controlError) return controlError;
        if (CheckIpAdapter() is { } ipAdapterError) return ipAdapterError;
        if (CheckRedux() is { } reduxError) return reduxError;
        if (CheckAdapter() is { } adapterError) return adapterError;
        if (GeneratorDevice.Trim().ToLowerInvariant() is not ("cpu" or "cuda")) return $"--generator-device must be cpu or cuda, got '{GeneratorDevice}'.";
        string ext = Path.GetExtension(Output).ToLowerInvariant();
        if (ext is not (".png" or ".jpg" or ".jpeg")) return $"--output must end in .png, .jpg or .jpeg, got '{Output}'.";
        string? dir = Path.GetDirectoryName(Path.GetFullPath(Output));
        if (dir is not null && !Directory.Exists(dir)) return $"output folder does not exist: {dir}.";
        return null;
    }
}

/// <summary>Options of <c>img2img</c>.</summary>
public class Img2ImgSettings : GenerateSettings
{
    /// <summary>Input image.</summary>
    [CommandOption("--image <FILE>"), Description("The starting image (PNG or JPEG).")]
    public string? Image { get; init; }

    /// <summary>Strength.</summary>
    [CommandOption("--strength <S>"), Description("How much to change the image, in [[0, 1]] (default: the pipeline's; SD3, Flux and Z-Image 0.6, SD 1.x img2img 0.8 / inpaint 1.0, SDXL img2img 0.3 / inpaint 0.9999; with --controlnet, SDXL img2img 0.8).")]
    public string? Strength { get; init; }

    /// <summary>The parsed strength, or null for the pipeline's default.</summary>
    public double? StrengthValue => Strength is null ? null : double.Parse(Strength, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>InstructPix2Pix's image guidance scale.</summary>
    [CommandOption("--image-guidance <S>"), Description("img2img with an InstructPix2Pix model (model_index StableDiffusionInstructPix2PixPipeline, e.g. timbrooks/instruct-pix2pix, or StableDiffusionXLInstructPix2PixPipeline, e.g. diffusers/sdxl-instructpix2pix-768; the prompt is the edit instruction): how closely the result keeps to the image (diffusers' image_guidance_scale, default 1.5; below 1 turns guidance off).")]
    public string? ImageGuidance { get; init; }

    /// <summary>The parsed image guidance scale, or null for the pipeline's default.</summary>
    public double? ImageGuidanceValue => ImageGuidance is null ? null : double.Parse(ImageGuidance, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>The x4 upscaler's noise level.</summary>
    [CommandOption("--noise-level <N>"), Description("img2img with an x4 upscaler (model_index StableDiffusionUpscalePipeline, e.g. stabilityai/stable-diffusion-x4-upscaler; the output is four times the image): how much noise is added to the low-resolution image first, 0 to the model's max_noise_level (350); more lets the model invent more detail (diffusers' noise_level, default 20).")]
    public int? NoiseLevel { get; init; }

    /// <inheritdoc />
    protected override string? Check()
    {
        if (base.Check() is { } error) return error;
        if (string.IsNullOrWhiteSpace(Image)) return "--image is required.";
        if (!File.Exists(Image)) return $"--image not found: {Image}.";
        if (Strength is not null && (!double.TryParse(Strength, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) || !(s >= 0 && s <= 1)))
            return $"--strength must be a number in [0, 1], got '{Strength}'.";
        if (SkipLayers is not null) return "--skip-layers applies to generate only (diffusers has skip-layer guidance in text-to-image only).";
        if (ImageGuidance is not null && (!double.TryParse(ImageGuidance, NumberStyles.Float, CultureInfo.InvariantCulture, out double ig) || !double.IsFinite(ig)))
            return $"--image-guidance must be a finite number, got '{ImageGuidance}'.";
        if (ImageGuidance is not null && this is InpaintSettings) return "--image-guidance applies to img2img with an InstructPix2Pix model.";
        if (NoiseLevel is not null && this is InpaintSettings) return "--noise-level applies to img2img with an x4 upscaler.";
        if (NoiseLevel is < 0) return $"--noise-level must be >= 0, got {NoiseLevel}.";
        return null;
    }
}

/// <summary>Options of <c>inpaint</c>.</summary>
public sealed class InpaintSettings : Img2ImgSettings
{
    /// <summary>Mask image.</summary>
    [CommandOption("--mask <FILE>"), Description("The mask: white is repainted, black kept.")]
    public string? Mask { get; init; }

    /// <summary>diffusers' padding_mask_crop.</summary>
    [CommandOption("--padding-mask-crop <PIXELS>"), Description("Inpaint only the mask's bounding box grown by this many pixels (widened to the output's aspect ratio) at the full output size, then paste it back onto the image, which keeps its own size (diffusers' padding_mask_crop): finer detail for a small mask on a large image. The mask must have the image's size. SD 1.x / 2.x and SDXL (with --controlnet too), SD3 and Flux; not FLUX.1-Fill, nor with an SD3 or Flux --controlnet.")]
    public int? PaddingMaskCrop { get; init; }

    /// <inheritdoc />
    protected override string? Check()
    {
        if (base.Check() is { } error) return error;
        if (string.IsNullOrWhiteSpace(Mask)) return "--mask is required.";
        if (!File.Exists(Mask)) return $"--mask not found: {Mask}.";
        if (PaddingMaskCrop is < 0) return $"--padding-mask-crop must be >= 0, got {PaddingMaskCrop}.";
        return null;
    }
}
