"""A plain-Python reference of fastText's hashing and mmq's tokenizer, written from
fastText's definitions (dictionary.cc), used to check the Rust implementation."""

SPACES = {" ", "\n", "\r", "\t", "\v", "\f", "\0"}


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        sb = b - 256 if b >= 128 else b  # int8_t
        h ^= sb & 0xFFFFFFFF
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def is_nospace(c: str) -> bool:
    o = ord(c)
    return (0x0E00 <= o <= 0x0EFF or 0x1000 <= o <= 0x109F or 0x1780 <= o <= 0x17FF
            or 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0x3400 <= o <= 0x4DBF
            or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F)


def words(text: str, split_cjk: bool) -> list:
    out, cur = [], ""
    for ch in text:
        if ch in SPACES:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    if not split_cjk:
        return out
    res = []
    for w in out:
        cur = ""
        for ch in w:
            if is_nospace(ch):
                if cur:
                    res.append(cur)
                cur = ""
                res.append(ch)
            else:
                cur += ch
        if cur:
            res.append(cur)
    return res


def char_ngrams(word: str, minn: int, maxn: int) -> list:
    w = "<" + word + ">"
    out = []
    for i in range(len(w)):
        for n in range(1, maxn + 1):
            if i + n > len(w):
                break
            if n >= minn and not (n == 1 and (i == 0 or i + n == len(w))):
                out.append(w[i:i + n])
    return out


def tokenize(text, word_ngrams=1, minn=0, maxn=0, bucket=2_000_000, split_cjk=True):
    ids, hashes = [], []
    for w in words(text, split_cjk):
        h = fnv1a(w.encode())
        hashes.append(h)
        ids.append(h % bucket)
        if maxn > 0:
            ids += [fnv1a(g.encode()) % bucket for g in char_ngrams(w, minn, maxn)]
    eos = fnv1a(b"</s>")
    hashes.append(eos)
    ids.append(eos % bucket)
    M = (1 << 64) - 1
    signed = [h - (1 << 32) if h >= (1 << 31) else h for h in hashes]
    for i in range(len(hashes)):
        h = signed[i] & M
        for j in range(i + 1, min(len(hashes), i + word_ngrams)):
            h = (h * 116049371 + (signed[j] & M)) & M
            ids.append(h % bucket)
    return ids
