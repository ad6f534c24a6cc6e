//! Reading plain objects out of the target: dicts (combined and split tables, every key
//! kind), small ints and instance attributes, for `threading`'s registry of threads. As
//! with strings, every count is bounded and every object's type checked, so a stale
//! pointer gives an error or nothing, never a wrong value.
//!
//! The dict layout (`PyDictKeysObject`, x86_64) is the same from 3.11 to 3.14: `dk_refcnt`,
//! then the bytes `dk_log2_size`, `dk_log2_index_bytes`, `dk_kind` at 8, 9 and 10,
//! `dk_nentries` at 24 and the index table at 32, followed by the entries: `{hash, key,
//! value}` for general keys, `{key, value}` for str-only and split keys. A split table's
//! values are in a separate array, in entry order.

use std::collections::HashMap;

use super::PyError;
use super::offsets::{InstanceDict, Layout};
use super::strings::{Types, str_is};
use crate::process::Memory;

const KEYS_HEADER: u64 = 32;
/// Entries read from one dict at most (a dict larger than this is treated as torn).
const MAX_ENTRIES: u64 = 1 << 16;
/// `Py_TPFLAGS_MANAGED_DICT` and (3.13+) `Py_TPFLAGS_INLINE_VALUES`.
const MANAGED_DICT: u64 = 1 << 4;
const INLINE_VALUES: u64 = 1 << 2;

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A dict's keys object, as far as finding entries needs.
struct Keys {
    /// Address of entry 0.
    entries: u64,
    count: u64,
    /// General keys store the hash first: 24-byte entries instead of 16.
    general: bool,
}

impl Keys {
    fn read(mem: &dyn Memory, keys: u64) -> Result<Keys, PyError> {
        let h = mem
            .read_vec(keys, KEYS_HEADER as usize)
            .map_err(PyError::Memory)?;
        let (log2_size, log2_index_bytes, kind) = (h[8], h[9], h[10]);
        let count = word(&h, 24);
        // Sized checked first: a torn read's 255 must not overflow the index width's bound.
        let index_width_ok =
            log2_size <= 30 && (log2_size..=log2_size + 3).contains(&log2_index_bytes);
        if !index_width_ok || count > (1 << log2_size) || count > MAX_ENTRIES {
            return Err(PyError::Torn("implausible dict keys"));
        }
        if kind > 2 {
            return Err(PyError::Torn("unknown dict keys kind"));
        }
        Ok(Keys {
            entries: keys
                .wrapping_add(KEYS_HEADER)
                .wrapping_add(1u64 << log2_index_bytes),
            count,
            general: kind == 0,
        })
    }

    fn entry_size(&self) -> u64 {
        if self.general { 24 } else { 16 }
    }

    /// Each entry's key and (in a combined table) value.
    fn entries(&self, mem: &dyn Memory) -> Result<Vec<(u64, u64)>, PyError> {
        let size = self.entry_size() as usize;
        let raw = mem
            .read_vec(self.entries, self.count as usize * size)
            .map_err(PyError::Memory)?;
        let key_at = if self.general { 8 } else { 0 };
        Ok(raw
            .chunks_exact(size)
            .map(|e| (word(e, key_at), word(e, key_at + 8)))
            .collect())
    }
}

/// Reads objects of one interpreter. Remembers where each class's instances keep the
/// attributes asked for, so an attribute costs a read or two, not a search of the keys.
#[derive(Default)]
pub struct Objects {
    /// (shared keys, attribute name) → the entry's index and its key object, checked
    /// again at each use (a freed keys object's memory can be reused).
    slots: HashMap<(u64, &'static str), (u64, u64)>,
}

impl Objects {
    /// The (key, value) pairs of the dict at `dict`.
    pub fn items(
        &self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        dict: u64,
    ) -> Result<Vec<(u64, u64)>, PyError> {
        let (keys, values) = dict_parts(mem, l, t, dict)?;
        let keys = Keys::read(mem, keys)?;
        let mut entries = keys.entries(mem)?;
        if values != 0 {
            let values = split_values(mem, l, values, keys.count)?;
            for (e, v) in entries
                .iter_mut()
                .zip(values.into_iter().chain(std::iter::repeat(0)))
            {
                e.1 = v;
            }
        }
        entries.retain(|&(k, v)| k != 0 && v != 0);
        Ok(entries)
    }

    /// The value of `dict[name]` for a str key, `None` when it has no such key.
    pub fn lookup(
        &self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        dict: u64,
        name: &str,
    ) -> Result<Option<u64>, PyError> {
        Ok(find_str_key(mem, l, t, &self.items(mem, l, t, dict)?, name))
    }

    /// The attribute `name` of the instance at `obj` from its own attributes (not its
    /// class's), for instances of classes defined in Python; `None` when it has none.
    pub fn attribute(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        obj: u64,
        name: &'static str,
    ) -> Result<Option<u64>, PyError> {
        let o = &l.objects;
        let ty = mem
            .read_u64(obj.wrapping_add(l.ob_type))
            .map_err(PyError::Memory)?;
        let flags = mem
            .read_u64(ty.wrapping_add(o.type_flags))
            .map_err(PyError::Memory)?;
        if flags & MANAGED_DICT == 0 {
            return Ok(None);
        }
        let (dict, values) = match o.instance_dict {
            InstanceDict::PreHeader => {
                let pre = mem
                    .read_vec(obj.wrapping_sub(32), 16)
                    .map_err(PyError::Memory)?;
                (word(&pre, 8), word(&pre, 0))
            }
            InstanceDict::Tagged => {
                let w = mem
                    .read_u64(obj.wrapping_sub(24))
                    .map_err(PyError::Memory)?;
                if w & 1 == 1 { (0, w + 1) } else { (w, 0) }
            }
            InstanceDict::Inline { dict_offset } => {
                let dict = mem
                    .read_u64(obj.wrapping_add_signed(dict_offset))
                    .map_err(PyError::Memory)?;
                let inline = if dict == 0 && flags & INLINE_VALUES != 0 {
                    let size = mem
                        .read_u64(ty.wrapping_add(o.type_basicsize))
                        .map_err(PyError::Memory)?;
                    if size > 4096 {
                        return Err(PyError::Torn("implausible tp_basicsize"));
                    }
                    obj.wrapping_add(size)
                } else {
                    0
                };
                (dict, inline)
            }
        };
        if dict != 0 {
            return self.lookup(mem, l, t, dict, name);
        }
        if values == 0 {
            return Ok(None);
        }
        let keys = mem
            .read_u64(ty.wrapping_add(o.heap_cached_keys))
            .map_err(PyError::Memory)?;
        let Some(index) = self.slot(mem, l, t, keys, name)? else {
            return Ok(None);
        };
        let values = split_values(mem, l, values, index + 1)?;
        Ok(values.get(index as usize).copied().filter(|&v| v != 0))
    }

    /// The index of key `name` among the shared keys at `keys`.
    fn slot(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        keys: u64,
        name: &'static str,
    ) -> Result<Option<u64>, PyError> {
        let k = Keys::read(mem, keys)?;
        if let Some(&(index, key)) = self.slots.get(&(keys, name))
            && index < k.count
            && mem
                .read_u64(k.entries + index * k.entry_size() + if k.general { 8 } else { 0 })
                .is_ok_and(|now| now == key)
        {
            return Ok(Some(index));
        }
        for (index, (key, _)) in k.entries(mem)?.into_iter().enumerate() {
            if key != 0 && str_is(mem, l, t, key, name).unwrap_or(false) {
                self.slots.insert((keys, name), (index as u64, key));
                return Ok(Some(index as u64));
            }
        }
        Ok(None)
    }
}

/// The value whose key is the str `name` among a dict's `items`.
pub fn find_str_key(
    mem: &dyn Memory,
    l: &Layout,
    t: &Types,
    items: &[(u64, u64)],
    name: &str,
) -> Option<u64> {
    // A key that is not a str (or is torn) is not the one looked for.
    items
        .iter()
        .find(|&&(key, _)| str_is(mem, l, t, key, name).unwrap_or(false))
        .map(|&(_, value)| value)
}

/// A dict's keys and values pointers (values 0 for a combined table), its type checked.
fn dict_parts(mem: &dyn Memory, l: &Layout, t: &Types, dict: u64) -> Result<(u64, u64), PyError> {
    let o = &l.objects;
    let len = o.dict_keys.max(o.dict_values) + 8;
    let raw = mem.read_vec(dict, len as usize).map_err(PyError::Memory)?;
    if word(&raw, l.ob_type as usize) != t.dict {
        return Err(PyError::Torn("not a dict"));
    }
    Ok((
        word(&raw, o.dict_keys as usize),
        word(&raw, o.dict_values as usize),
    ))
}

/// The first `count` pointers of a split table's values array, fewer when the array holds
/// fewer (3.13+ say how many it has room for; 3.11/3.12 size it to the keys).
fn split_values(
    mem: &dyn Memory,
    l: &Layout,
    values: u64,
    count: u64,
) -> Result<Vec<u64>, PyError> {
    let start = l.objects.values_start;
    let count = if start > 0 {
        let header = mem.read_vec(values, 4).map_err(PyError::Memory)?;
        // capacity, size, embedded, valid: inline values no longer valid moved to a dict.
        if header[3] == 0 && header[2] != 0 {
            return Ok(Vec::new());
        }
        count.min(u64::from(header[0]))
    } else {
        count
    };
    let raw = mem
        .read_vec(values.wrapping_add(start), count as usize * 8)
        .map_err(PyError::Memory)?;
    Ok(raw.chunks_exact(8).map(|w| word(w, 0)).collect())
}

/// The value of the int at `addr`, when it fits 60 bits (two 30-bit digits).
pub fn int_value(mem: &dyn Memory, l: &Layout, t: &Types, addr: u64) -> Result<i64, PyError> {
    let o = &l.objects;
    let raw = mem
        .read_vec(addr, (o.long_digits + 8) as usize)
        .map_err(PyError::Memory)?;
    if word(&raw, l.ob_type as usize) != t.long {
        return Err(PyError::Torn("not an int"));
    }
    let size = word(&raw, o.long_size as usize);
    let (digits, negative) = if o.long_tagged {
        (size >> 3, size & 3 == 2)
    } else {
        let signed = size as i64;
        (signed.unsigned_abs(), signed < 0)
    };
    if digits > 2 {
        return Err(PyError::Torn("int too large"));
    }
    let digit = |i: usize| {
        let at = o.long_digits as usize + 4 * i;
        u64::from(u32::from_le_bytes(
            raw[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    let mut value = 0u64;
    for i in 0..digits as usize {
        let d = digit(i);
        if d >= 1 << 30 {
            return Err(PyError::Torn("bad int digit"));
        }
        value |= d << (30 * i);
    }
    Ok(if negative {
        -(value as i64)
    } else {
        value as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::offsets::ObjectLayout;
    use crate::python::test_image::{BASE, Image, TYPES, layout_3_12};

    const TYPE: u64 = BASE + 0x1000;
    const OBJ: u64 = BASE + 0x2040;

    /// A class with managed dicts whose shared keys are `_name` and `_native_id`, an
    /// instance of it at `OBJ`, and the two values at `values` when given.
    fn instance(img: &mut Image, l: &Layout, values: Option<u64>) {
        img.word(TYPE + l.objects.type_flags, MANAGED_DICT | INLINE_VALUES);
        img.word(TYPE + l.objects.type_basicsize, 32);
        img.word(TYPE + l.objects.heap_cached_keys, BASE + 0x3000);
        img.keys(BASE + 0x3000, 2, &[(BASE + 0x4000, 0), (BASE + 0x4100, 0)]);
        img.str(BASE + 0x4000, "_name");
        img.str(BASE + 0x4100, "_native_id");
        img.word(OBJ + 8, TYPE);
        img.str(BASE + 0x5000, "worker-1");
        img.int(BASE + 0x5100, 1 << 3, &[4242]);
        if let Some(v) = values {
            img.word(v, BASE + 0x5000);
            img.word(v + 8, BASE + 0x5100);
        }
    }

    /// A torn read's keys header with every byte 0xff (log2 size 255) is refused, not a
    /// panic on the index width's bound (found by the `python` fuzz target).
    #[test]
    fn a_keys_header_of_all_ones_is_refused() {
        let header = [0xffu8; KEYS_HEADER as usize];
        let mem = crate::process::memory::Bytes {
            base: BASE,
            bytes: &header,
        };
        assert!(matches!(Keys::read(&mem, BASE), Err(PyError::Torn(_))));
    }

    #[test]
    fn dict_items_and_str_key_lookup() {
        let l = layout_3_12();
        let mut img = Image::default();
        img.dict(BASE, BASE + 0x100, 0);
        img.keys(
            BASE + 0x100,
            1,
            &[
                (BASE + 0x400, 7),
                (0, 0),
                (BASE + 0x500, 9),
                (BASE + 0x600, 11),
            ],
        );
        img.str(BASE + 0x400, "threading");
        img.str(BASE + 0x500, "données");
        // A key that is not a str (an int) is skipped, not misread.
        img.int(BASE + 0x600, 1 << 3, &[1]);
        let (mem, o) = (img.mem(), Objects::default());
        let items = o.items(&mem, &l, &TYPES, BASE).unwrap();
        assert_eq!(
            items,
            vec![(BASE + 0x400, 7), (BASE + 0x500, 9), (BASE + 0x600, 11)]
        );
        assert_eq!(
            o.lookup(&mem, &l, &TYPES, BASE, "threading").unwrap(),
            Some(7)
        );
        assert_eq!(o.lookup(&mem, &l, &TYPES, BASE, "thread").unwrap(), None);
        // Not a dict, and keys that cannot be (more entries than slots).
        assert!(o.items(&mem, &l, &TYPES, BASE + 0x400).is_err());
        img.word(BASE + 0x100 + 24, 9);
        assert!(o.items(&img.mem(), &l, &TYPES, BASE).is_err());
    }

    #[test]
    fn ints_of_both_encodings() {
        let l312 = layout_3_12();
        let mut img = Image::default();
        img.int(BASE, 2 << 3, &[123_456, 7]);
        let mem = img.mem();
        assert_eq!(
            int_value(&mem, &l312, &TYPES, BASE).unwrap(),
            123_456 + (7 << 30)
        );
        img.int(BASE, (1 << 3) | 2, &[5]);
        assert_eq!(int_value(&img.mem(), &l312, &TYPES, BASE).unwrap(), -5);
        img.int(BASE, 1, &[]);
        assert_eq!(int_value(&img.mem(), &l312, &TYPES, BASE).unwrap(), 0);
        // 3.11 counts digits in a signed ob_size.
        let l311 = Layout {
            objects: ObjectLayout {
                long_tagged: false,
                ..l312.objects
            },
            ..l312
        };
        img.int(BASE, (-1i64) as u64, &[5]);
        assert_eq!(int_value(&img.mem(), &l311, &TYPES, BASE).unwrap(), -5);
        // Too many digits, a digit out of range, not an int.
        img.int(BASE, 3 << 3, &[1, 1, 1]);
        assert!(int_value(&img.mem(), &l312, &TYPES, BASE).is_err());
        img.int(BASE, 1 << 3, &[1 << 30]);
        assert!(int_value(&img.mem(), &l312, &TYPES, BASE).is_err());
        img.word(BASE + 8, TYPES.dict);
        assert!(int_value(&img.mem(), &l312, &TYPES, BASE).is_err());
    }

    #[test]
    fn attributes_from_tagged_values_inline_values_and_dicts() {
        // 3.12: the word before the GC header is a values array's address minus one.
        let l = layout_3_12();
        let mut img = Image::default();
        let values = BASE + 0x6000;
        instance(&mut img, &l, Some(values));
        img.word(OBJ - 24, values - 1);
        let mut o = Objects::default();
        let mem = img.mem();
        assert_eq!(
            o.attribute(&mem, &l, &TYPES, OBJ, "_native_id").unwrap(),
            Some(BASE + 0x5100)
        );
        // Again, from the remembered slot.
        assert_eq!(
            o.attribute(&mem, &l, &TYPES, OBJ, "_name").unwrap(),
            Some(BASE + 0x5000)
        );
        assert_eq!(
            o.attribute(&mem, &l, &TYPES, OBJ, "_name").unwrap(),
            Some(BASE + 0x5000)
        );
        assert_eq!(o.attribute(&mem, &l, &TYPES, OBJ, "_other").unwrap(), None);

        // 3.13: values inline after tp_basicsize bytes, behind a 4-byte header.
        let l313 = Layout {
            objects: ObjectLayout {
                values_start: 8,
                instance_dict: InstanceDict::Inline { dict_offset: -24 },
                ..l.objects
            },
            ..l
        };
        let mut img = Image::default();
        instance(&mut img, &l313, Some(OBJ + 32 + 8));
        img.put(OBJ + 32, &[4, 2, 1, 1]);
        let mut o = Objects::default();
        assert_eq!(
            o.attribute(&img.mem(), &l313, &TYPES, OBJ, "_name")
                .unwrap(),
            Some(BASE + 0x5000)
        );
        // Inline values no longer valid (moved to a dict that is not there yet): nothing.
        img.put(OBJ + 32, &[4, 2, 1, 0]);
        assert_eq!(
            o.attribute(&img.mem(), &l313, &TYPES, OBJ, "_name")
                .unwrap(),
            None
        );
        // With a dict, the dict.
        img.word(OBJ - 24, BASE + 0x7000);
        img.dict(BASE + 0x7000, BASE + 0x7100, 0);
        img.keys(BASE + 0x7100, 1, &[(BASE + 0x4000, BASE + 0x5200)]);
        assert_eq!(
            o.attribute(&img.mem(), &l313, &TYPES, OBJ, "_name")
                .unwrap(),
            Some(BASE + 0x5200)
        );
        // A class without managed dicts has no attributes read.
        img.word(TYPE + l313.objects.type_flags, 0);
        assert_eq!(
            o.attribute(&img.mem(), &l313, &TYPES, OBJ, "_name")
                .unwrap(),
            None
        );
    }
}
