"""Dict- and str-heavy workload: word counting, index building, string
formatting, slicing, joining, and dict/set operations.

Deterministic: everything is computed without relying on str hash order
(output only uses sorted views or insertion-ordered dicts).  Prints a
checksum line.
"""
import sys

WORDS = 300_000

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qu",
             "ar", "en", "is", "om", "ul", "yx"]


def gen_words(n):
    x = 7
    out = []
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        k = 1 + (x >> 27) % 4
        w = ""
        y = x >> 11
        for _ in range(k):
            w += SYLLABLES[y & 15]
            y >>= 4
        out.append(w)
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else WORDS
    words = gen_words(n)

    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1

    by_prefix = {}
    for w in counts:
        by_prefix.setdefault(w[:2], []).append(w)

    index = {}
    for pos, w in enumerate(words):
        key = w[-3:]
        if key in index:
            index[key].append(pos)
        else:
            index[key] = [pos]

    # string building
    pieces = []
    for w, c in counts.items():
        if c > 2:
            pieces.append(f"{w.upper()}={c};")
    blob = "".join(pieces)
    renamed = {w.replace("a", "4").replace("e", "3"): c for w, c in counts.items()}
    caps = {w.capitalize(): len(w) for w in words[: n // 3]}
    merged = dict(counts)
    merged.update(renamed)
    keys_a = set(counts)
    keys_b = set(renamed)
    common = keys_a & keys_b
    only_a = keys_a - keys_b

    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    checksum = 0
    for w in sorted(index):
        checksum = (checksum * 33 + len(index[w]) + sum(map(ord, w))) % 1_000_000_007
    for p in sorted(by_prefix):
        checksum = (checksum * 7 + len(by_prefix[p])) % 1_000_000_007
    checksum = (checksum + len(blob) + len(merged) + len(caps) + len(common) * 3
                + len(only_a) * 5 + blob.count("KA") + sum(renamed.values())) % 1_000_000_007
    top_s = ",".join(f"{w}:{c}" for w, c in top)
    print(f"dict_str words={n} distinct={len(counts)} top={top_s} checksum={checksum}")


if __name__ == "__main__":
    main()
