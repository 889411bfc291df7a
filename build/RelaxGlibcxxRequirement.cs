#nullable enable
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

/// <summary>
/// Marks one GNU symbol-version requirement (e.g. GLIBCXX_3.4.32) of an ELF64 shared library as weak
/// (VER_FLG_WEAK in its Vernaux entry), but only when the system libstdc++ does not define that version.
/// The library file is rewritten atomically; the task is idempotent.
/// </summary>
public sealed class RelaxGlibcxxRequirement : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    [Required] public ITaskItem[] Libraries { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string Version { get; set; } = "";

    public override bool Execute()
    {
        string? libstdcxx = FindSystemLibstdcxx();
        if (libstdcxx == null) return true; // cannot tell: leave the library as shipped
        if (Contains(File.ReadAllBytes(libstdcxx), Encoding.ASCII.GetBytes(Version + "\0"))) return true; // not needed here
        foreach (var item in Libraries)
        {
            string path = item.GetMetadata("FullPath");
            try
            {
                if (MarkWeak(path))
                    Log.LogMessage(MessageImportance.High, $"{Path.GetFileName(path)}: {Version} marked weak ({libstdcxx} lacks it).");
            }
            catch (Exception e)
            {
                Log.LogError($"Could not relax {Version} in {path}: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    private static string? FindSystemLibstdcxx()
    {
        foreach (var dir in new[] { "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib" })
        {
            string p = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(p)) return p;
        }
        return null;
    }

    private static bool Contains(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }

    /// <summary>Returns true when the file was changed.</summary>
    private bool MarkWeak(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A), shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
            long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 0x18);
            uint link = BitConverter.ToUInt32(elf, (int)sh + 0x28), count = BitConverter.ToUInt32(elf, (int)sh + 0x2C);
            long strtab = (long)BitConverter.ToUInt64(elf, (int)(shoff + link * shentsize) + 0x18);
            long vn = offset;
            for (uint n = 0; n < count; n++)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                long vna = vn + BitConverter.ToUInt32(elf, (int)vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    long name = strtab + BitConverter.ToUInt32(elf, (int)vna + 8);
                    int end = Array.IndexOf(elf, (byte)0, (int)name);
                    if (Encoding.ASCII.GetString(elf, (int)name, end - (int)name) == Version)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, (int)vna + 4);
                        if ((flags & VerFlgWeak) != 0) return false;
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)vna + 4);
                        string tmp = path + ".tmp";
                        File.WriteAllBytes(tmp, elf);
                        File.Delete(path); // a new inode, so a hard link into the package cache is never written through
                        File.Move(tmp, path);
                        return true;
                    }
                    vna += BitConverter.ToUInt32(elf, (int)vna + 12);
                }
                vn += BitConverter.ToUInt32(elf, (int)vn + 12);
            }
        }
        return false;
    }
}
