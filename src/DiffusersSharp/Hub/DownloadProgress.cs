namespace DiffusersSharp.Hub;

/// <summary>A progress report of a model download.</summary>
/// <param name="File">Repo path of the file this report is about.</param>
/// <param name="FileBytes">Bytes of that file on disk so far (resumed bytes included).</param>
/// <param name="FileSize">That file's size, when the hub said.</param>
/// <param name="FilesDone">Files finished (downloaded or found in the cache), out of <paramref name="FileCount"/>.</param>
/// <param name="FileCount">Files the model needs.</param>
/// <param name="Done">Whether this file is complete.</param>
public sealed record DownloadProgress(string File, long FileBytes, long? FileSize, int FilesDone, int FileCount, bool Done);
