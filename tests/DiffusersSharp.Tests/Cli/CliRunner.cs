using DiffusersSharp.Cli;

namespace DiffusersSharp.Tests.Cli;

/// <summary>Runs the <c>diffusers</c> command in-process and captures its output.</summary>
internal static class CliRunner
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
