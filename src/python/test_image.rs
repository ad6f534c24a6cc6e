//! A target's memory built by hand for unit tests: objects laid out as CPython 3.12 lays
//! them (16-byte header, `PyASCIIObject` of 40 bytes, `lv_tag` ints, dict keys of 8 slots).

use super::offsets::Layout;
use super::strings::Types;
use crate::process::memory::Bytes;

pub const BASE: u64 = 0x1000;

pub const TYPES: Types = Types {
    code: 0xc0de,
    unicode: 0x5700,
    bytes: 0xb7e5,
    dict: 0xd1c7,
    long: 0x1017,
    module: 0x3d01,
};

/// The 3.12 table, which needs no memory to read.
pub fn layout_3_12() -> Layout {
    Layout::read(
        &Bytes {
            base: 0,
            bytes: &[],
        },
        0,
        0x030c01f0,
    )
    .expect("3.12 has a table")
}

#[derive(Default)]
pub struct Image(Vec<u8>);

impl Image {
    pub fn put(&mut self, at: u64, bytes: &[u8]) {
        let i = (at - BASE) as usize;
        if self.0.len() < i + bytes.len() {
            self.0.resize(i + bytes.len(), 0);
        }
        self.0[i..i + bytes.len()].copy_from_slice(bytes);
    }

    pub fn word(&mut self, at: u64, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    /// A compact `str`: ASCII (one byte a character) or, when `wide`, two bytes each.
    pub fn str(&mut self, at: u64, text: &str) {
        let wide: Vec<u16> = text.encode_utf16().collect();
        let ascii = text.is_ascii();
        self.word(at + 8, TYPES.unicode);
        self.word(at + 16, wide.len() as u64);
        let kind: u32 = if ascii { 1 } else { 2 };
        self.put(
            at + 32,
            &((kind << 2) | (1 << 5) | (u32::from(ascii) << 6)).to_le_bytes(),
        );
        let data: Vec<u8> = if ascii {
            text.bytes().collect()
        } else {
            wide.iter().flat_map(|c| c.to_le_bytes()).collect()
        };
        self.put(at + if ascii { 40 } else { 56 }, &data);
    }

    /// An int of 3.12 (`lv_tag` = digit count << 3 | sign).
    pub fn int(&mut self, at: u64, tag: u64, digits: &[u32]) {
        self.word(at + 8, TYPES.long);
        self.word(at + 16, tag);
        for (i, d) in digits.iter().enumerate() {
            self.put(at + 24 + 4 * i as u64, &d.to_le_bytes());
        }
    }

    /// A keys object of 8 slots: general keys (`kind` 0, `{hash, key, value}` entries),
    /// str keys (1) or split (2, `{key, value}`).
    pub fn keys(&mut self, at: u64, kind: u8, entries: &[(u64, u64)]) {
        self.put(at + 8, &[3, 3, kind]);
        self.word(at + 24, entries.len() as u64);
        let (size, key_at) = if kind == 0 { (24, 8) } else { (16, 0) };
        for (i, &(k, v)) in entries.iter().enumerate() {
            let e = at + 32 + 8 + size * i as u64 + key_at;
            self.word(e, k);
            self.word(e + 8, v);
        }
    }

    pub fn dict(&mut self, at: u64, keys: u64, values: u64) {
        self.word(at + 8, TYPES.dict);
        self.word(at + 32, keys);
        self.word(at + 40, values);
    }

    pub fn mem(&self) -> Bytes<'_> {
        Bytes {
            base: BASE,
            bytes: &self.0,
        }
    }
}
