//! One frame's unwind rule, compiled from a CFI row into a small owned form that can be
//! cached per address and applied without going back to the section: how to find the
//! canonical frame address (CFA) and where the caller's registers were saved. DWARF
//! expressions (signal trampolines, PLT stubs) are kept as bytes and evaluated with gimli
//! against the frame's registers and memory when applied.

use gimli::{Encoding, EndianSlice, EvaluationResult, Format, LittleEndian, Location, Value};

use crate::process::regs::dwarf;
use crate::process::{MemError, Memory, Regs};

/// How the CFA is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cfa {
    RegOffset { reg: u16, offset: i64 },
    Expr(Box<[u8]>),
}

/// Where a caller's register value is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Undefined,
    Same,
    /// Saved in memory at CFA + offset.
    At(i64),
    /// Its value is CFA + offset.
    Val(i64),
    /// Held in another register.
    Reg(u16),
    /// Saved in memory at the address the expression computes (CFA pushed first).
    AtExpr(Box<[u8]>),
    /// Its value is what the expression computes (CFA pushed first).
    ValExpr(Box<[u8]>),
}

/// The compiled rule of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub cfa: Cfa,
    /// The return address (the caller's instruction pointer).
    pub ra: Saved,
    /// Explicit rules for other registers; the rest follow the x86_64 convention.
    pub regs: Vec<(u16, Saved)>,
    /// The frame is a signal trampoline: the caller's pc is the interrupted instruction,
    /// not a return address, and its stack pointer may be anywhere (an alternate stack).
    pub signal: bool,
}

impl Rule {
    /// The rule of a frame that has just been called: CFA = rsp + 8, return address at
    /// CFA - 8 (the first instruction of a function, and PLT stubs without CFI).
    pub fn at_entry() -> Rule {
        Rule::rsp_offset(8)
    }

    pub fn rsp_offset(offset: i64) -> Rule {
        Rule {
            cfa: Cfa::RegOffset {
                reg: dwarf::RSP as u16,
                offset,
            },
            ra: Saved::At(-8),
            regs: Vec::new(),
            signal: false,
        }
    }
}

/// Why a frame could not be unwound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("register {0} is needed but unknown")]
    UnknownRegister(u16),
    #[error("reading the stack: {0}")]
    Memory(#[from] MemError),
    #[error("unsupported DWARF expression")]
    Expression,
}

/// The result of applying a rule. Not boxed: one is made per frame walked, and a heap
/// allocation per frame would cost more than the copy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The caller's registers (its instruction pointer is set).
    Caller(Regs),
    /// The return address is undefined: this is the outermost frame.
    Outermost,
}

/// Callee-saved registers on x86_64: without a rule, the caller has the same value.
const CALLEE_SAVED: [usize; 6] = [dwarf::RBX, dwarf::RBP, 12, 13, 14, 15];

/// Apply `rule` to the frame whose registers are `regs`.
pub fn apply(rule: &Rule, regs: &Regs, mem: &dyn Memory) -> Result<Step, StepError> {
    let cfa = match &rule.cfa {
        Cfa::RegOffset { reg, offset } => need(regs, *reg)?.wrapping_add(*offset as u64),
        Cfa::Expr(expr) => evaluate(expr, None, regs, mem)?.value,
    };
    let ip = match recover(&rule.ra, cfa, dwarf::RIP, regs, mem) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Ok(Step::Outermost),
        Err(StepError::UnknownRegister(r)) => return Err(StepError::UnknownRegister(r)),
        Err(e) => return Err(e),
    };
    let mut caller = Regs::default();
    for r in CALLEE_SAVED {
        if let Some(v) = regs.get(r) {
            caller.set(r, v);
        }
    }
    caller.set(dwarf::RSP, cfa);
    for (reg, saved) in &rule.regs {
        // A register whose saved value cannot be recovered is unknown in the caller; that
        // only matters if a later frame needs it, which then stops the walk.
        match recover(saved, cfa, *reg as usize, regs, mem) {
            Ok(Some(v)) => caller.set(*reg as usize, v),
            _ => caller.clear(*reg as usize),
        }
    }
    caller.set(dwarf::RIP, ip);
    Ok(Step::Caller(caller))
}

fn need(regs: &Regs, reg: u16) -> Result<u64, StepError> {
    regs.get(reg as usize)
        .ok_or(StepError::UnknownRegister(reg))
}

/// The caller's value of register `reg` under `saved`; `None` when undefined.
fn recover(
    saved: &Saved,
    cfa: u64,
    reg: usize,
    regs: &Regs,
    mem: &dyn Memory,
) -> Result<Option<u64>, StepError> {
    let v = match saved {
        Saved::Undefined => return Ok(None),
        Saved::Same => need(regs, reg as u16)?,
        Saved::At(off) => mem.read_u64(cfa.wrapping_add(*off as u64))?,
        Saved::Val(off) => cfa.wrapping_add(*off as u64),
        Saved::Reg(r) => need(regs, *r)?,
        Saved::AtExpr(e) => {
            let out = evaluate(e, Some(cfa), regs, mem)?;
            if out.is_address {
                mem.read_u64(out.value)?
            } else {
                out.value
            }
        }
        Saved::ValExpr(e) => evaluate(e, Some(cfa), regs, mem)?.value,
    };
    Ok(Some(v))
}

struct Evaluated {
    value: u64,
    /// The expression gave a memory location rather than a value.
    is_address: bool,
}

const ENCODING: Encoding = Encoding {
    format: Format::Dwarf32,
    version: 4,
    address_size: 8,
};

/// Evaluate a CFI expression, answering its register and memory requests from the frame.
fn evaluate(
    expr: &[u8],
    cfa: Option<u64>,
    regs: &Regs,
    mem: &dyn Memory,
) -> Result<Evaluated, StepError> {
    let mut eval = gimli::Expression(EndianSlice::new(expr, LittleEndian)).evaluation(ENCODING);
    if let Some(cfa) = cfa {
        eval.set_initial_value(cfa);
    }
    let mut state = eval.evaluate().map_err(|_| StepError::Expression)?;
    // Each request is answered once; a bounded loop keeps a hostile expression finite.
    for _ in 0..64 {
        state = match state {
            EvaluationResult::Complete => {
                let pieces = eval.as_result();
                return match pieces.first().map(|p| &p.location) {
                    Some(Location::Address { address }) if pieces.len() == 1 => Ok(Evaluated {
                        value: *address,
                        is_address: true,
                    }),
                    Some(Location::Value { value }) if pieces.len() == 1 => Ok(Evaluated {
                        value: value.to_u64(u64::MAX).map_err(|_| StepError::Expression)?,
                        is_address: false,
                    }),
                    _ => Err(StepError::Expression),
                };
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let v = need(regs, register.0)?;
                eval.resume_with_register(Value::Generic(v))
                    .map_err(|_| StepError::Expression)?
            }
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let mut buf = [0u8; 8];
                let n = usize::from(size).min(8);
                mem.read(address, &mut buf[..n])?;
                eval.resume_with_memory(Value::Generic(u64::from_le_bytes(buf)))
                    .map_err(|_| StepError::Expression)?
            }
            EvaluationResult::RequiresCallFrameCfa => match cfa {
                Some(cfa) => eval
                    .resume_with_call_frame_cfa(cfa)
                    .map_err(|_| StepError::Expression)?,
                None => return Err(StepError::Expression),
            },
            _ => return Err(StepError::Expression),
        };
    }
    Err(StepError::Expression)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;

    fn stack(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn rsp_offset_rule_pops_a_return_address_and_keeps_callee_saved() {
        let bytes = stack(&[0xaaaa, 0xbbbb, 0x0040_1122]);
        let mem = Bytes {
            base: 0x1000,
            bytes: &bytes,
        };
        let mut regs = Regs::from_ip_sp(0x4000, 0x1000);
        regs.set(dwarf::RBX, 7);
        regs.set(dwarf::RAX, 9);
        let rule = Rule::rsp_offset(24);
        let Step::Caller(c) = apply(&rule, &regs, &mem).unwrap() else {
            panic!("outermost")
        };
        assert_eq!(
            (c.ip(), c.sp(), c.get(dwarf::RBX), c.get(dwarf::RAX)),
            (0x0040_1122, 0x1018, Some(7), None)
        );
    }

    #[test]
    fn undefined_return_address_is_the_outermost_frame() {
        let rule = Rule {
            ra: Saved::Undefined,
            ..Rule::at_entry()
        };
        let mem = Bytes {
            base: 0,
            bytes: &[],
        };
        assert_eq!(
            apply(&rule, &Regs::from_ip_sp(1, 0x10), &mem),
            Ok(Step::Outermost)
        );
    }

    #[test]
    fn unknown_needed_register_stops_instead_of_guessing() {
        let rule = Rule {
            cfa: Cfa::RegOffset {
                reg: dwarf::RBP as u16,
                offset: 16,
            },
            ..Rule::at_entry()
        };
        let mem = Bytes {
            base: 0,
            bytes: &[0; 64],
        };
        assert_eq!(
            apply(&rule, &Regs::from_ip_sp(1, 0x10), &mem),
            Err(StepError::UnknownRegister(dwarf::RBP as u16))
        );
    }

    #[test]
    fn signal_frame_expressions_read_the_saved_context() {
        // glibc's __restore_rt: CFA = *(rsp + 160); rip at rsp + 168; rbx at rsp + 128.
        // DW_OP_breg7 (0x77) takes a signed LEB128 offset: 160 = a0 01, 168 = a8 01.
        let cfa = vec![0x77, 0xa0, 0x01, 0x06]; // DW_OP_breg7 160; DW_OP_deref
        let rip = vec![0x77, 0xa8, 0x01];
        let rbx = vec![0x77, 0x80, 0x01];
        let rule = Rule {
            cfa: Cfa::Expr(cfa.into()),
            ra: Saved::AtExpr(rip.into()),
            regs: vec![
                (
                    dwarf::RSP as u16,
                    Saved::AtExpr(vec![0x77, 0xa0, 0x01].into()),
                ),
                (dwarf::RBX as u16, Saved::AtExpr(rbx.into())),
            ],
            signal: true,
        };
        let mut words = vec![0u64; 24];
        words[128 / 8] = 0x5151;
        words[160 / 8] = 0x7000;
        words[168 / 8] = 0x40_1234;
        let bytes = stack(&words);
        let mem = Bytes {
            base: 0x2000,
            bytes: &bytes,
        };
        let Step::Caller(c) = apply(&rule, &Regs::from_ip_sp(0x9999, 0x2000), &mem).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.ip(), c.sp(), c.get(dwarf::RBX)),
            (0x40_1234, 0x7000, Some(0x5151))
        );
    }

    #[test]
    fn malformed_expression_is_an_error() {
        let rule = Rule {
            cfa: Cfa::Expr(vec![0xff, 0x00].into()),
            ..Rule::at_entry()
        };
        let mem = Bytes {
            base: 0,
            bytes: &[],
        };
        assert!(apply(&rule, &Regs::from_ip_sp(1, 0x10), &mem).is_err());
    }
}
