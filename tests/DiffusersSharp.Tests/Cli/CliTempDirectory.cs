namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// What the command-line test classes share: a temporary folder for each test (xunit builds the class once per test),
/// deleted afterwards with everything the CLI wrote there, and <see cref="Out"/> for the output files in it.
/// </summary>
public abstract class CliTempDirectory(string prefix) : IDisposable
{
    /// <summary>The test's folder.</summary>
    protected string Dir { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    /// <summary>A file in <see cref="Dir"/> (the default output).</summary>
    protected string Out(string name = "out.png") => Path.Combine(Dir, name);

    /// <summary>Deletes <see cref="Dir"/>.</summary>
    public void Dispose()
    {
        Directory.Delete(Dir, true);
        GC.SuppressFinalize(this);
    }
}
