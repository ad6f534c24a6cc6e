//! Decoding `co_linetable`, the location table of CPython 3.11+ code objects (format described
//! in CPython's `Objects/locations.md`), to find the source line of one instruction.
//!
//! The table is a sequence of entries, each covering 1–8 code units. An entry starts with a
//! byte that has bit 7 set: bits 3–6 are the entry's code, bits 0–2 its length minus one.
//! Codes 0–9 (short form, same line, one column byte), 10–12 (line + code − 10, two column
//! bytes), 13 (signed varint line delta, no columns), 14 (long form: signed varint line delta,
//! then end-line delta, start and end columns as varints) and 15 (no location).

/// The line of the instruction at `index` (in 2-byte code units from the start of the
/// bytecode), starting the running line at `first_line`. An instruction the table gives no
/// location (code 15: the compiler's own jumps, such as the jump back at the end of a `for`
/// body, where a thread waiting for the GIL parks) gets the running line, the line of the
/// statement it ends, as py-spy shows it; CPython's `f_lineno` would say `None` there, and the
/// function's first line that a caller could fall back to names a line that never ran. `None`
/// when the table does not cover the instruction or is malformed.
pub fn line_for(table: &[u8], first_line: u32, index: u64) -> Option<u32> {
    let mut r = Reader {
        bytes: table,
        pos: 0,
    };
    let mut line = i64::from(first_line);
    let mut start: u64 = 0;
    while let Some(head) = r.byte() {
        if head & 0x80 == 0 {
            return None;
        }
        let code = (head >> 3) & 0x0f;
        let end = start + u64::from(head & 7) + 1;
        match code {
            0..=9 => {
                r.byte()?;
            }
            10..=12 => {
                line += i64::from(code - 10);
                r.byte()?;
                r.byte()?;
            }
            13 => line += r.svarint()?,
            14 => {
                line += r.svarint()?;
                r.varint()?;
                r.varint()?;
                r.varint()?;
            }
            _ => {}
        }
        if index < end {
            return u32::try_from(line).ok();
        }
        start = end;
    }
    None
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// 6-bit chunks, least significant first; bit 6 says another chunk follows.
    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift > 60 {
                return None;
            }
            value |= u64::from(b & 0x3f) << shift;
            shift += 6;
            if b & 0x40 == 0 {
                return Some(value);
            }
        }
    }

    /// A varint whose bit 0 is the sign.
    fn svarint(&mut self) -> Option<i64> {
        let v = self.varint()?;
        let magnitude = (v >> 1) as i64;
        Some(if v & 1 == 1 { -magnitude } else { magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(code: u8, units: u8) -> u8 {
        0x80 | (code << 3) | (units - 1)
    }

    #[test]
    fn short_and_one_line_forms() {
        // 2 units on the first line, 3 units one line down, 1 unit two lines further.
        let t = [head(0, 2), 0x00, head(11, 3), 1, 5, head(12, 1), 0, 3];
        assert_eq!(line_for(&t, 10, 0), Some(10));
        assert_eq!(line_for(&t, 10, 1), Some(10));
        assert_eq!(line_for(&t, 10, 2), Some(11));
        assert_eq!(line_for(&t, 10, 4), Some(11));
        assert_eq!(line_for(&t, 10, 5), Some(13));
        assert_eq!(line_for(&t, 10, 6), None);
    }

    #[test]
    fn no_column_and_long_forms_with_signed_varints() {
        // +5 lines (svarint 10), then -3 lines (svarint 7) in long form with columns.
        let t = [head(13, 4), 10, head(14, 2), 7, 0, 4, 9];
        assert_eq!(line_for(&t, 1, 3), Some(6));
        assert_eq!(line_for(&t, 1, 4), Some(3));
        assert_eq!(line_for(&t, 1, 5), Some(3));
    }

    #[test]
    fn multi_chunk_varint() {
        // svarint 200 = +100 lines: chunks 0x08 | 0x40 (continue), then 3 (3 << 6 = 192).
        let t = [head(13, 1), 0x48, 0x03];
        assert_eq!(line_for(&t, 1, 0), Some(101));
    }

    #[test]
    fn no_location_entries_keep_the_running_line() {
        // No location first, then two lines down, then no location again (a loop's jump back).
        let t = [head(15, 2), head(12, 1), 0, 0, head(15, 1)];
        assert_eq!(line_for(&t, 7, 1), Some(7));
        assert_eq!(line_for(&t, 7, 2), Some(9));
        assert_eq!(line_for(&t, 7, 3), Some(9));
        assert_eq!(line_for(&t, 7, 4), None);
    }

    #[test]
    fn malformed_tables_give_none() {
        assert_eq!(line_for(&[], 1, 0), None);
        assert_eq!(line_for(&[0x05], 1, 0), None);
        assert_eq!(line_for(&[head(13, 1)], 1, 0), None);
        assert_eq!(
            line_for(
                &[
                    head(13, 1),
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f,
                    0x7f
                ],
                1,
                0
            ),
            None
        );
        // A line that would go below zero.
        assert_eq!(line_for(&[head(13, 1), 9], 1, 0), None);
    }
}
