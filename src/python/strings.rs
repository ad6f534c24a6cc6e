//! Reading `str` and `bytes` objects out of the target, with every length bounded and the
//! object's type checked, so a stale pointer gives an error instead of garbage.

use super::PyError;
use super::offsets::Layout;
use crate::process::Memory;

/// Names and file names longer than this are treated as torn reads.
const MAX_STR_CHARS: u64 = 4096;
/// Location tables longer than this are treated as torn reads.
const MAX_BYTES: u64 = 1 << 20;

/// The type objects an object's `ob_type` must point at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Types {
    pub code: u64,
    pub unicode: u64,
    pub bytes: u64,
    /// `dict`, `int` and `module`: read only for thread names (see [`super::threading`]).
    pub dict: u64,
    pub long: u64,
    pub module: u64,
}

fn word(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A compact `str` object's header: where its characters are, how many, how wide.
struct StrHeader {
    data: u64,
    len: u64,
    width: u64,
}

fn str_header(
    mem: &dyn Memory,
    layout: &Layout,
    types: &Types,
    addr: u64,
) -> Result<StrHeader, PyError> {
    let header = mem
        .read_vec(addr, layout.ascii_object_size as usize)
        .map_err(PyError::Memory)?;
    if word(&header, layout.ob_type) != types.unicode {
        return Err(PyError::Torn("not a str object"));
    }
    let len = word(&header, layout.unicode_length);
    if len > MAX_STR_CHARS {
        return Err(PyError::Torn("str too long"));
    }
    let state = u32::from_le_bytes(
        header[layout.unicode_state as usize..][..4]
            .try_into()
            .expect("4 bytes"),
    );
    let shift = layout.state_kind_shift;
    let kind = (state >> shift) & 7;
    let compact = (state >> (shift + 3)) & 1 == 1;
    let ascii = (state >> (shift + 4)) & 1 == 1;
    if !compact {
        return Err(PyError::Torn("str is not compact"));
    }
    let width = match kind {
        1 | 2 | 4 => kind as u64,
        _ => return Err(PyError::Torn("bad str kind")),
    };
    Ok(StrHeader {
        data: addr
            .wrapping_add(layout.ascii_object_size + if ascii { 0 } else { layout.compact_extra }),
        len,
        width,
    })
}

/// The text of a compact `str` object (code names, file names, dict keys and thread names
/// always are compact).
pub fn read_str(
    mem: &dyn Memory,
    layout: &Layout,
    types: &Types,
    addr: u64,
) -> Result<String, PyError> {
    let h = str_header(mem, layout, types, addr)?;
    let raw = mem
        .read_vec(h.data, (h.len * h.width) as usize)
        .map_err(PyError::Memory)?;
    let chars = raw.chunks_exact(h.width as usize).map(|c| {
        let mut v = [0u8; 4];
        v[..c.len()].copy_from_slice(c);
        char::from_u32(u32::from_le_bytes(v)).unwrap_or(char::REPLACEMENT_CHARACTER)
    });
    Ok(chars.collect())
}

/// Whether the `str` object at `addr` is `text` (ASCII): its characters are read only when
/// its length matches, so looking a key up among many costs one read per key.
pub fn str_is(
    mem: &dyn Memory,
    layout: &Layout,
    types: &Types,
    addr: u64,
    text: &str,
) -> Result<bool, PyError> {
    let h = str_header(mem, layout, types, addr)?;
    if h.len != text.len() as u64 || h.width != 1 {
        return Ok(false);
    }
    let raw = mem.read_vec(h.data, text.len()).map_err(PyError::Memory)?;
    Ok(raw == text.as_bytes())
}

/// The contents of a `bytes` object.
pub fn read_bytes(
    mem: &dyn Memory,
    layout: &Layout,
    types: &Types,
    addr: u64,
) -> Result<Vec<u8>, PyError> {
    let header = mem
        .read_vec(addr, layout.bytes_ob_sval as usize)
        .map_err(PyError::Memory)?;
    if word(&header, layout.ob_type) != types.bytes {
        return Err(PyError::Torn("not a bytes object"));
    }
    let len = word(&header, layout.bytes_ob_size);
    if len > MAX_BYTES {
        return Err(PyError::Torn("bytes too long"));
    }
    mem.read_vec(addr.wrapping_add(layout.bytes_ob_sval), len as usize)
        .map_err(PyError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;
    use crate::python::offsets::PyVersion;

    use crate::python::test_image::TYPES;

    fn layout() -> Layout {
        // The 3.12 table: 40-byte PyASCIIObject, 16 more bytes for compact non-ASCII.
        crate::python::offsets::Layout::read(
            &Bytes {
                base: 0,
                bytes: &[],
            },
            0,
            0x030c01f0,
        )
        .unwrap()
    }

    fn str_object(kind: u32, ascii: bool, len: u64, data: &[u8]) -> Vec<u8> {
        let l = layout();
        let mut o = vec![0u8; if ascii { 40 } else { 56 }];
        o[8..16].copy_from_slice(&TYPES.unicode.to_le_bytes());
        o[16..24].copy_from_slice(&len.to_le_bytes());
        let state = (kind << 2) | (1 << 5) | (u32::from(ascii) << 6);
        o[l.unicode_state as usize..][..4].copy_from_slice(&state.to_le_bytes());
        o.extend_from_slice(data);
        o
    }

    /// A string object placed at 0x100, read back.
    fn read_at_0x100(l: &Layout, object: &[u8]) -> Result<String, PyError> {
        let mem = Bytes {
            base: 0x100,
            bytes: object,
        };
        read_str(&mem, l, &TYPES, 0x100)
    }

    #[test]
    fn ascii_and_wide_strings() {
        let l = layout();
        assert_eq!(l.version, PyVersion::from_hex(0x030c01f0));
        let cases: [(&[u8], u32, bool, u64, &str); 3] = [
            (b"hello", 1, true, 5, "hello"),
            (&[0xe9, 0x00, 0x3b, 0x04], 2, false, 2, "éл"),
            (&0x1f600u32.to_le_bytes(), 4, false, 1, "😀"),
        ];
        for (data, kind, ascii, len, text) in cases {
            let o = str_object(kind, ascii, len, data);
            assert_eq!(read_at_0x100(&l, &o).unwrap(), text);
        }
    }

    #[test]
    fn rejects_wrong_type_bad_kind_and_huge_lengths() {
        let l = layout();
        let mut o = str_object(1, true, 5, b"hello");
        o[8] ^= 1;
        assert!(read_str(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).is_err());
        let o = str_object(3, true, 5, b"hello");
        assert!(read_str(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).is_err());
        let o = str_object(1, true, 1 << 40, b"hello");
        assert!(read_str(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).is_err());
        let o = str_object(1, true, 50, b"hello");
        assert!(read_str(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).is_err());
    }

    #[test]
    fn bytes_objects() {
        let l = layout();
        let mut o = vec![0u8; 32];
        o[8..16].copy_from_slice(&TYPES.bytes.to_le_bytes());
        o[16..24].copy_from_slice(&3u64.to_le_bytes());
        o.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            read_bytes(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).unwrap(),
            vec![1, 2, 3]
        );
        o[16] = 4;
        assert!(read_bytes(&Bytes { base: 0, bytes: &o }, &l, &TYPES, 0).is_err());
    }
}
