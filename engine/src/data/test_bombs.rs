//! Decompression bombs for tests, written directly: compressing gigabytes of zeros
//! with an unoptimised test build would take minutes.

/// A raw deflate stream inflating to `len` zero bytes (`len` ≥ 1): one fixed-Huffman
/// block of a literal 0 followed by length-258, distance-1 copies (13 bits each).
pub(crate) fn deflate_zeros(len: u64) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(1, 1); // BFINAL
    w.bits(1, 2); // BTYPE = fixed Huffman
    w.code(0b0011_0000, 8); // literal 0
    let mut left = len - 1;
    while left >= 258 {
        w.code(0b1100_0101, 8); // length code 285: 258 bytes
        w.code(0, 5); // distance code 0: 1 back
        left -= 258;
    }
    for _ in 0..left {
        w.code(0b0011_0000, 8);
    }
    w.code(0, 7); // end of block (256)
    w.finish()
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// `count` bits of `v`, least significant first (header fields).
    fn bits(&mut self, v: u64, count: u32) {
        self.acc |= v << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, v: u64, count: u32) {
        for i in (0..count).rev() {
            self.bits((v >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A gzip member around `deflate` (CRC and size fields are not checked before the
/// stream ends, so they are left zero).
pub(crate) fn gzip(deflate: &[u8]) -> Vec<u8> {
    let mut g = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    g.extend_from_slice(deflate);
    g.extend_from_slice(&[0; 8]);
    g
}

/// A zip archive of one deflated entry `name` with the given data, declaring
/// `inflated` bytes.
pub(crate) fn zip_one(name: &str, deflated: &[u8], inflated: u64) -> Vec<u8> {
    let le16 = |v: u16| v.to_le_bytes();
    let le32 = |v: u32| v.to_le_bytes();
    let (csize, usize_) = (deflated.len() as u32, inflated as u32);
    let mut z = Vec::new();
    z.extend_from_slice(&le32(0x0403_4b50));
    for v in [20u16, 0, 8, 0, 0] {
        z.extend_from_slice(&le16(v));
    }
    for v in [0u32, csize, usize_] {
        z.extend_from_slice(&le32(v));
    }
    z.extend_from_slice(&le16(name.len() as u16));
    z.extend_from_slice(&le16(0));
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(deflated);
    let cd_start = z.len() as u32;
    z.extend_from_slice(&le32(0x0201_4b50));
    for v in [20u16, 20, 0, 8, 0, 0] {
        z.extend_from_slice(&le16(v));
    }
    for v in [0u32, csize, usize_] {
        z.extend_from_slice(&le32(v));
    }
    for v in [name.len() as u16, 0, 0, 0, 0] {
        z.extend_from_slice(&le16(v));
    }
    z.extend_from_slice(&le32(0));
    z.extend_from_slice(&le32(0));
    z.extend_from_slice(name.as_bytes());
    let cd_len = z.len() as u32 - cd_start;
    z.extend_from_slice(&le32(0x0605_4b50));
    for v in [0u16, 0, 1, 1] {
        z.extend_from_slice(&le16(v));
    }
    z.extend_from_slice(&le32(cd_len));
    z.extend_from_slice(&le32(cd_start));
    z.extend_from_slice(&le16(0));
    z
}

#[test]
fn the_handmade_streams_inflate_as_promised() {
    use std::io::Read;
    for len in [1u64, 2, 258, 259, 260, 1000, 100_000] {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(deflate_zeros(len).as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, len);
        assert!(out.iter().all(|&b| b == 0));
    }
}
