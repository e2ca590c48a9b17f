//! fastText's hash functions, reproduced bit for bit.
//!
//! fastText (`src/dictionary.cc`, `Dictionary::hash`) runs FNV-1a over the UTF-8 bytes, but
//! xors each byte after converting it through `int8_t`, so bytes >= 0x80 are sign-extended
//! to `0xFFFFFFxx` before the xor. Word n-grams combine the 32-bit word hashes, each
//! sign-extended to 64 bits, as `h = h * 116049371 + next` in wrapping u64 arithmetic.

const FNV_OFFSET: u32 = 2_166_136_261;
const FNV_PRIME: u32 = 16_777_619;

/// fastText's FNV-1a 32-bit hash with the signed-byte quirk.
#[inline]
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= (b as i8) as u32;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Multiplier fastText uses to chain word hashes into an n-gram hash.
pub const NGRAM_MULT: u64 = 116_049_371;

/// Hash of the word n-gram made of `hashes` (word hashes from [`fnv1a`]), as fastText
/// computes it in `Dictionary::addWordNgrams`.
#[inline]
pub fn word_ngram_hash(hashes: &[u32]) -> u64 {
    let mut it = hashes.iter();
    let mut h = match it.next() {
        Some(&first) => first as i32 as i64 as u64,
        None => return 0,
    };
    for &next in it {
        h = h
            .wrapping_mul(NGRAM_MULT)
            .wrapping_add(next as i32 as i64 as u64);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_empty_is_offset() {
        assert_eq!(fnv1a(b""), FNV_OFFSET);
    }

    #[test]
    fn fnv_ascii_matches_plain_fnv1a() {
        // For ASCII bytes the quirk changes nothing: standard FNV-1a test vector.
        assert_eq!(fnv1a(b"a"), 0xe40c292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn fnv_high_bytes_are_sign_extended() {
        // 0xC3 as i8 is -61 -> 0xFFFFFFC3: differs from standard FNV-1a.
        let quirky = fnv1a("é".as_bytes());
        let mut h = FNV_OFFSET;
        for &b in "é".as_bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(FNV_PRIME);
        }
        assert_ne!(quirky, h);
    }

    #[test]
    fn ngram_hash_sign_extends() {
        let a = 0x8000_0001u32; // negative as i32
        let b = 5u32;
        let expect = (0xFFFF_FFFF_8000_0001u64)
            .wrapping_mul(NGRAM_MULT)
            .wrapping_add(5);
        assert_eq!(word_ngram_hash(&[a, b]), expect);
    }
}
