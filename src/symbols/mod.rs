//! Addresses to function names. (Contract for the symbolizer.)

use crate::frame::Frame;
use crate::target::{Maps, Memory};

#[derive(Default)]
pub struct Symbolizer {}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer::default()
    }

    /// The frames at `addr`, outermost first (a function, then what was inlined into it).
    /// `return_address` says `addr` is a return address, to be looked up as `addr - 1`.
    pub fn symbolize(&mut self, maps: &Maps, _mem: &dyn Memory, addr: u64, _return_address: bool) -> Vec<Frame> {
        let (module, off) = match maps.find(addr) {
            Some(m) => (m.short_name().to_string(), addr - m.start + m.offset),
            None => ("[unknown]".to_string(), addr),
        };
        vec![Frame::native(format!("{module}+{off:#x}"), module)]
    }
}
