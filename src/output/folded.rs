//! Folded stacks: `frame;frame;...;leaf;[state] COUNT`, root first, one line per distinct
//! stack, sorted so that two runs over the same data write the same bytes.

use std::collections::BTreeMap;

use crate::profile::Profile;

/// The folded lines of a profile; with `threads`, each stack starts with `name tid`.
pub fn lines(p: &Profile, threads: bool) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (&(tid, stack, state), &n) in &p.counts {
        let mut parts: Vec<String> = Vec::new();
        if threads {
            parts.push(thread_label(p, tid));
        }
        parts.extend(p.stack(stack).iter().map(|&f| p.frame(f).label()));
        parts.push(state.leaf());
        *merged.entry(parts.join(";")).or_default() += n;
    }
    merged
        .into_iter()
        .map(|(stack, n)| format!("{stack} {n}"))
        .collect()
}

/// The root frame of a thread's stacks with `--threads`: `name tid`.
pub fn thread_label(p: &Profile, tid: i32) -> String {
    let name = p.threads.get(&tid).map(|t| t.name.as_str()).unwrap_or("");
    format!("{} {}", name.replace(';', ":"), tid)
}

pub fn write(p: &Profile, threads: bool, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for line in lines(p, threads) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
