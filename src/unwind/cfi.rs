//! A module's call frame information: `.eh_frame` found through the binary search table of
//! `.eh_frame_hdr` (or an index built once when there is no table), and `.debug_frame`
//! from the binary or its separate debug file. Looking up an address evaluates the CFI
//! program with gimli and compiles the row into a [`Rule`].

use std::ops::Range;

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Reader,
    Register, RegisterRule, UnwindContext, UnwindSection, UnwindTableRow,
};
use object::{Object, ObjectSection};

use super::rule::{Cfa, Rule, Saved};
use crate::process::elf::{ElfImage, SharedBytes};
use crate::process::regs::dwarf;

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// A section's bytes and the virtual address it is loaded at.
struct Section {
    bytes: SharedBytes,
    range: Range<usize>,
    svma: u64,
}

impl Section {
    fn from(image: &ElfImage, name: &str) -> Option<Section> {
        let svma = image.object()?.section_by_name(name)?.address();
        let (bytes, range) = image.section_bytes(name)?;
        Some(Section { bytes, range, svma })
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

/// An FDE's address range and its offset in its section, for sections searched by index.
#[derive(Debug, Clone, Copy)]
struct FdeSpan {
    start: u64,
    end: u64,
    offset: usize,
}

/// The unwind tables of one module.
pub struct CfiTables {
    eh_frame: Option<Section>,
    eh_frame_hdr: Option<Section>,
    /// `.eh_frame`'s FDEs, indexed only when `.eh_frame_hdr` has no usable table.
    eh_index: Vec<FdeSpan>,
    debug_frame: Option<Section>,
    debug_index: Vec<FdeSpan>,
    bases: BaseAddresses,
    /// `.plt`, `.plt.sec`, `.plt.got`: stubs entered by a call, CFA = rsp + 8 when no CFI.
    plt: Vec<Range<u64>>,
}

impl CfiTables {
    /// Read the tables of `image`, with `.debug_frame` from `debug` when the image has none.
    pub fn load(image: &ElfImage, debug: Option<&ElfImage>) -> CfiTables {
        let eh_frame = Section::from(image, ".eh_frame");
        let eh_frame_hdr = Section::from(image, ".eh_frame_hdr");
        let debug_frame = Section::from(image, ".debug_frame")
            .or_else(|| debug.and_then(|d| Section::from(d, ".debug_frame")));
        let (mut text, mut got, mut plt) = (0, 0, Vec::new());
        if let Some(file) = image.object() {
            for s in file.sections() {
                match s.name().unwrap_or("") {
                    ".text" => text = s.address(),
                    ".got" => got = s.address(),
                    ".plt" | ".plt.sec" | ".plt.got" => {
                        plt.push(s.address()..s.address().saturating_add(s.size()))
                    }
                    _ => {}
                }
            }
        }
        let mut bases = BaseAddresses::default().set_text(text).set_got(got);
        if let Some(s) = &eh_frame {
            bases = bases.set_eh_frame(s.svma);
        }
        if let Some(s) = &eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(s.svma);
        }
        let mut t = CfiTables {
            eh_frame,
            eh_frame_hdr,
            eh_index: Vec::new(),
            debug_frame,
            debug_index: Vec::new(),
            bases,
            plt,
        };
        if t.eh_frame.is_some() && t.hdr_table_usable().is_none() {
            t.eh_index = t
                .eh_frame
                .as_ref()
                .map(|s| index(&eh_frame_section(s), &t.bases))
                .unwrap_or_default();
        }
        if let Some(s) = &t.debug_frame {
            t.debug_index = index(&debug_frame_section(s), &BaseAddresses::default());
        }
        t
    }

    /// True when the module has no unwind information at all.
    pub fn is_empty(&self) -> bool {
        self.eh_frame.is_none() && self.debug_frame.is_none() && self.plt.is_empty()
    }

    fn hdr_table_usable(&self) -> Option<()> {
        let hdr = EhFrameHdr::new(self.eh_frame_hdr.as_ref()?.data(), LittleEndian)
            .parse(&self.bases, 8)
            .ok()?;
        hdr.table().map(|_| ())
    }

    /// The rule for the frame executing at `svma` (a return address already minus one),
    /// or `None` when no CFI covers it.
    pub fn rule_at(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Option<Rule> {
        let rule = self
            .rule_from_eh_frame(svma, ctx)
            .or_else(|| self.rule_from_debug_frame(svma, ctx))
            .or_else(|| {
                self.plt
                    .iter()
                    .any(|r| r.contains(&svma))
                    .then(Rule::at_entry)
            });
        self.release();
        rule
    }

    /// Lets the FDE sections' pages leave parprof's memory once a lookup is done (see
    /// `SharedBytes::release`): rules are cached per address, so an FDE is read about once,
    /// and on kernels that map a whole large page-cache folio at a fault, lookups kept 16 of
    /// libtorch_cpu.so's 17 MiB of `.eh_frame` resident. `.eh_frame_hdr`, the index each
    /// lookup searches, stays.
    fn release(&self) {
        for s in [&self.eh_frame, &self.debug_frame].into_iter().flatten() {
            s.bytes.release(s.range.clone());
        }
    }

    fn rule_from_eh_frame(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Option<Rule> {
        let eh = eh_frame_section(self.eh_frame.as_ref()?);
        let fde = self.eh_fde(svma)?;
        let row = fde
            .unwind_info_for_address(&eh, &self.bases, ctx, svma)
            .ok()?;
        compile(row, &eh, fde.is_signal_trampoline())
    }

    fn rule_from_debug_frame(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Option<Rule> {
        let df = debug_frame_section(self.debug_frame.as_ref()?);
        let bases = BaseAddresses::default();
        let fde = fde_in_index(&df, &self.debug_index, &bases, svma)?;
        let row = fde.unwind_info_for_address(&df, &bases, ctx, svma).ok()?;
        compile(row, &df, fde.is_signal_trampoline())
    }

    /// Where the function holding `svma` starts, by its FDE: code that no symbol names
    /// still belongs to one function the unwind info knows.
    pub fn function_start(&self, svma: u64) -> Option<u64> {
        let fde = self.eh_fde(svma).or_else(|| {
            let df = debug_frame_section(self.debug_frame.as_ref()?);
            fde_in_index(&df, &self.debug_index, &BaseAddresses::default(), svma)
        });
        let start = fde.map(|f| f.initial_address());
        self.release();
        start
    }

    /// The `.eh_frame` FDE covering `svma`.
    fn eh_fde(&self, svma: u64) -> Option<Fde<'_>> {
        let eh = eh_frame_section(self.eh_frame.as_ref()?);
        if !self.eh_index.is_empty() {
            return fde_in_index(&eh, &self.eh_index, &self.bases, svma);
        }
        let hdr = EhFrameHdr::new(self.eh_frame_hdr.as_ref()?.data(), LittleEndian)
            .parse(&self.bases, 8)
            .ok()?;
        let table = hdr.table()?;
        // gimli's `fde_for_address` subtracts the table's pointer from `eh_frame_ptr`
        // unchecked, which overflows (a panic in debug builds) on a corrupt table; the
        // same three steps with the subtraction checked.
        let fde_ptr = table.lookup(svma, &self.bases).ok()?.direct().ok()?;
        let offset = fde_ptr.checked_sub(hdr.eh_frame_ptr().direct().ok()?)?;
        let offset = gimli::EhFrameOffset(usize::try_from(offset).ok()?);
        let fde = eh
            .fde_from_offset(&self.bases, offset, EhFrame::cie_from_offset)
            .ok()?;
        fde.contains(svma).then_some(fde)
    }
}

/// A parsed FDE of one of a module's sections.
type Fde<'a> = gimli::FrameDescriptionEntry<Slice<'a>, usize>;

fn eh_frame_section(s: &Section) -> EhFrame<Slice<'_>> {
    let mut eh = EhFrame::new(s.data(), LittleEndian);
    eh.set_address_size(8);
    eh
}

fn debug_frame_section(s: &Section) -> DebugFrame<Slice<'_>> {
    let mut df = DebugFrame::new(s.data(), LittleEndian);
    df.set_address_size(8);
    df
}

/// Every FDE of a section, sorted by start address; entries that do not parse are skipped.
fn index<'a, S: UnwindSection<Slice<'a>>>(section: &S, bases: &BaseAddresses) -> Vec<FdeSpan>
where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let mut out = Vec::new();
    let mut entries = section.entries(bases);
    // A corrupt length field ends the walk; what was read so far is kept.
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(S::cie_from_offset)
            && fde.len() > 0
        {
            out.push(FdeSpan {
                start: fde.initial_address(),
                end: fde.end_address(),
                offset: partial.offset(),
            });
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

/// The FDE of an indexed section covering `svma`.
fn fde_in_index<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    index: &[FdeSpan],
    bases: &BaseAddresses,
    svma: u64,
) -> Option<Fde<'a>>
where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let i = index.partition_point(|f| f.start <= svma).checked_sub(1)?;
    let span = index[i];
    if svma >= span.end {
        return None;
    }
    section
        .fde_from_offset(bases, span.offset.into(), S::cie_from_offset)
        .ok()
}

/// A gimli row as a cached rule. `None` when the row has no return-address rule at all
/// (as opposed to an explicitly undefined one, which marks the outermost frame).
fn compile<'a, S: UnwindSection<Slice<'a>>>(
    row: &UnwindTableRow<usize>,
    section: &S,
    signal: bool,
) -> Option<Rule> {
    let expr = |e: &gimli::UnwindExpression<usize>| -> Option<Box<[u8]>> {
        Some(e.get(section).ok()?.0.to_slice().ok()?.into())
    };
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => Cfa::RegOffset {
            reg: register.0,
            offset: *offset,
        },
        CfaRule::Expression(e) => Cfa::Expr(expr(e)?),
    };
    let saved = |rule: RegisterRule<usize>| -> Saved {
        match rule {
            RegisterRule::SameValue => Saved::Same,
            RegisterRule::Offset(o) => Saved::At(o),
            RegisterRule::ValOffset(o) => Saved::Val(o),
            RegisterRule::Register(r) => Saved::Reg(r.0),
            RegisterRule::Expression(e) => expr(&e).map_or(Saved::Undefined, Saved::AtExpr),
            RegisterRule::ValExpression(e) => expr(&e).map_or(Saved::Undefined, Saved::ValExpr),
            _ => Saved::Undefined,
        }
    };
    let ra = saved(row.register(Register(dwarf::RIP as u16))?);
    let regs = row
        .registers()
        .filter(|(r, _)| (r.0 as usize) < dwarf::RIP)
        .map(|(r, rule)| (r.0, saved(rule.clone())))
        .collect();
    Some(Rule {
        cfa,
        ra,
        regs,
        signal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::elf::testdata;

    #[test]
    fn library_tables_give_rules_and_damaged_copies_never_panic() {
        let image = testdata::some_library();
        let tables = CfiTables::load(&image, None);
        let (start, size) = testdata::text(&image);
        let mut ctx = UnwindContext::new();
        let found = (0..64)
            .filter(|i| tables.rule_at(start + size * i / 64, &mut ctx).is_some())
            .count();
        assert!(found > 32, "only {found} of 64 addresses in .text have CFI");
        for damaged in testdata::damaged_copies(&image) {
            let tables = CfiTables::load(&damaged, None);
            for i in 0..256 {
                let _ = tables.rule_at(start + size * i / 256, &mut ctx);
            }
        }
    }
}
