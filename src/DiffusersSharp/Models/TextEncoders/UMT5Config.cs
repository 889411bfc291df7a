namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>UMT5Config</c> (the encoder part): the fields and their meaning are <see cref="T5Config"/>'s; only
/// the defaults of the Python constructor differ (google/umt5-small's: vocab 250112, d_ff 1024, 8 layers, 6 heads,
/// gated-gelu). AuraFlow's text_encoder (pile-t5-xl's shape) states every size in its config.json.
/// </summary>
public sealed record UMT5Config : T5Config
{
    /// <summary>A config with UMT5Config's Python defaults; config.json fields override them.</summary>
    public UMT5Config()
    {
        VocabSize = 250112;
        DFf = 1024;
        NumLayers = 8;
        NumHeads = 6;
        FeedForwardProj = "gated-gelu";
    }
}
