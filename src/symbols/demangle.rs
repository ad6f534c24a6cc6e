//! Demangled names: Rust (legacy and v0, shown without the hash) and C++ (Itanium).
//! Anything else, or a name that does not demangle, is returned as it is.

pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z")
        && let Ok(d) = cpp_demangle::Symbol::new(name).map(|s| s.demangle())
        && let Ok(d) = d
    {
        return d;
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn rust_cpp_and_c_names() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h1a2b3c4d5e6f7a8bE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate4work"), "mycrate::work");
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("worker_loop"), "worker_loop");
        assert_eq!(demangle("_Z"), "_Z");
    }
}
