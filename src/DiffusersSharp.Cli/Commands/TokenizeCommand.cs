using System.ComponentModel;
using System.Text;
using System.Text.Json;
using DiffusersSharp.Tokenizers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers tokenize --model M --prompt P [--max-sequence-length 256]</c>: JSON with the ids each tokenizer of the model
/// gives the prompt as the pipelines pad them (CLIP to its 77, T5 to --max-sequence-length; a Qwen2 tokenizer, Z-Image's,
/// the prompt in Qwen3's chat template as ZImagePipeline renders it, up to --max-sequence-length; a Llama tokenizer,
/// AuraFlow's, to --max-sequence-length as AuraFlowPipeline pads it); a one-line warning on
/// stderr when a tokenizer cuts the prompt.
/// </summary>
public sealed class TokenizeCommand(CliOutput output) : Command<TokenizeCommand.Settings>
{
    private static readonly string[] Folders = ["tokenizer", "tokenizer_2", "tokenizer_3"];

    /// <summary>Options of <c>tokenize</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Model folder in the diffusers layout.</summary>
        [CommandOption("--model <MODEL>")]
        [Description("Model folder in the diffusers layout (tokenizer/, tokenizer_2/, tokenizer_3/ are used).")]
        public string Model { get; init; } = "";

        /// <summary>The prompt to tokenize.</summary>
        [CommandOption("--prompt <PROMPT>")]
        [Description("The prompt to tokenize.")]
        public string? Prompt { get; init; }

        /// <summary>T5 length, as the pipeline's <c>max_sequence_length</c>.</summary>
        [CommandOption("--max-sequence-length <N>")]
        [Description("Length of the T5, Qwen2 and Llama ids (the pipeline's max_sequence_length, at most 512; Z-Image's pipeline uses 512). Default 256.")]
        [DefaultValue(256)]
        public int MaxSequenceLength { get; init; } = 256;

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Model)) return ValidationResult.Error("--model is required.");
            if (Prompt is null) return ValidationResult.Error("--prompt is required (it may be empty: --prompt \"\").");
            if (MaxSequenceLength is < 1 or > 512) return ValidationResult.Error($"--max-sequence-length must be 1..512 (T5 in SD3 takes at most 512), got {MaxSequenceLength}.");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (!Directory.Exists(settings.Model)) throw new DirectoryNotFoundException($"Model folder not found: {settings.Model}");
        var present = Folders.Where(f => Directory.Exists(Path.Combine(settings.Model, f))).ToArray();
        if (present.Length == 0)
            throw new ArgumentException($"{settings.Model} has no tokenizer folder (expected tokenizer/, tokenizer_2/ or tokenizer_3/).");

        var json = new StringBuilder("{\n");
        var cuts = new List<string>();
        for (int i = 0; i < present.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            string name = present[i];
            ITextTokenizer tokenizer = Load(Path.Combine(settings.Model, name), name);
            int maxLength = tokenizer is T5Tokenizer or Qwen2Tokenizer or LlamaTokenizer ? settings.MaxSequenceLength : tokenizer.ModelMaxLength;
            // Z-Image tokenizes each prompt in Qwen3's chat template (diffusers' ZImagePipeline._encode_prompt).
            string text = tokenizer is Qwen2Tokenizer ? Qwen3ChatTemplate.ApplyUserMessage(settings.Prompt!) : settings.Prompt!;
            TokenizedText result = tokenizer.Encode(text, maxLength);
            string entry = JsonSerializer.Serialize(new
            {
                @class = tokenizer.GetType().Name,
                max_length = maxLength,
                ids = result.Ids,
                untruncated_length = result.UntruncatedLength,
                truncated = result.WasTruncated,
            });
            json.Append($"  {JsonSerializer.Serialize(name)}: {entry}{(i < present.Length - 1 ? "," : "")}\n");
            if (result.WasTruncated)
                cuts.Add($"{name} kept {maxLength} of {result.UntruncatedLength} tokens, cut \"{Shorten(tokenizer.Decode(result.TruncatedIds))}\"");
        }
        json.Append('}');
        output.Out.WriteLine(json.ToString());
        if (cuts.Count > 0)
            output.Error.WriteLine($"warning: the prompt is longer than the text encoders take, they will not see the end: {string.Join("; ", cuts)}");
        return ExitCodes.Ok;
    }

    private static ITextTokenizer Load(string folder, string name)
    {
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        string declared = "";
        if (File.Exists(configPath))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("tokenizer_class", out var c)
                    && c.ValueKind == JsonValueKind.String) declared = c.GetString()!;
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{configPath} is not valid JSON: {e.Message}", e);
            }
        }
        if (declared.StartsWith("Qwen2Tokenizer", StringComparison.Ordinal)) return Qwen2Tokenizer.FromFolder(folder);
        if (declared.StartsWith("GemmaTokenizer", StringComparison.Ordinal)) return GemmaTokenizer.FromFolder(folder);
        if (declared.StartsWith("LlamaTokenizer", StringComparison.Ordinal)) return LlamaTokenizer.FromFolder(folder);
        bool t5 = declared.StartsWith("T5", StringComparison.Ordinal) || (declared.Length == 0 && name == "tokenizer_3");
        return t5 ? T5Tokenizer.FromFolder(folder) : CLIPTokenizer.FromFolder(folder);
    }

    private static string Shorten(string text) => text.Length <= 80 ? text : text[..77] + "...";
}
