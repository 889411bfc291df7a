# Our own script (DiffusersSharp): writes src/DiffusersSharp/Tokenizers/Data/nfc.txt, the Unicode data behind
# UnicodeNfc (NFC normalisation, which .NET's string.Normalize does not do for non-ASCII text under the project's
# InvariantGlobalization). From Python's unicodedata (Unicode 14.0.0 in Debian 12's Python 3.11):
#   "c XXXX N"        canonical combining class N (non-zero only) of code point XXXX;
#   "d XXXX YYYY[ ZZZZ]" the one-level canonical decomposition of XXXX (compatibility mappings, tagged <...>, are not
#                     canonical and are left out; Hangul syllables are algorithmic and left out);
#   "p XXXX YYYY ZZZZ"  the same for a primary composite: NFC composes YYYY ZZZZ back to XXXX (a two-character
#                     decomposition whose composite is not excluded: NFC of the composite is the composite itself).
# Run from the repository root:  /usr/bin/python3 tools/unicode/nfc_data.py
import sys
import unicodedata

lines = [f"# Unicode {unicodedata.unidata_version} canonical data for NFC, written by tools/unicode/nfc_data.py"]
for cp in range(sys.maxunicode + 1):
    ch = chr(cp)
    if 0xD800 <= cp <= 0xDFFF or 0xAC00 <= cp <= 0xD7A3:
        continue
    ccc = unicodedata.combining(ch)
    if ccc:
        lines.append(f"c {cp:04X} {ccc}")
    dec = unicodedata.decomposition(ch)
    if not dec or dec.startswith("<"):
        continue
    parts = dec.split()
    composes = len(parts) == 2 and unicodedata.normalize("NFC", ch) == ch
    lines.append(("p " if composes else "d ") + f"{cp:04X} " + " ".join(parts))
with open("src/DiffusersSharp/Tokenizers/Data/nfc.txt", "w", encoding="ascii", newline="\n") as f:
    f.write("\n".join(lines) + "\n")
print(len(lines) - 1, "entries")
