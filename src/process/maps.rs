//! `/proc/<pid>/maps`: which file backs which address range. Modules (executables and
//! shared libraries, PIE or not) are found here; their files are opened through
//! `/proc/<pid>/root` so a target in another mount namespace (a container) works.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Offset of `start` in the backing file.
    pub offset: u64,
    pub readable: bool,
    pub executable: bool,
    pub dev: String,
    pub inode: u64,
    /// The path as the target sees it, or a pseudo name such as `[vdso]`, `[stack]`,
    /// or empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    /// Backed by a regular file (not anonymous, not a `[pseudo]` mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// Whether `file` is the file mapped here: same inode, same device (`major:minor` in hex).
    pub fn is_backed_by(&self, file: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dev = file.dev();
        file.ino() == self.inode
            && self.dev == format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev))
    }

    pub fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }

    /// The short name used in frames that cannot be symbolised: `libc.so.6`, `[vdso]`.
    pub fn short_name(&self) -> &str {
        if self.path.is_empty() {
            "[anon]"
        } else {
            self.path
                .rsplit('/')
                .next()
                .unwrap_or(&self.path)
                .trim_end_matches(" (deleted)")
        }
    }
}

/// All mappings of a process, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub pid: i32,
    pub mappings: Vec<Mapping>,
}

impl Maps {
    pub fn read(pid: i32) -> std::io::Result<Maps> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        Ok(Maps {
            pid,
            mappings: parse(&text),
        })
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.end <= addr);
        self.mappings.get(i).filter(|m| m.contains(addr))
    }

    /// Where to open a mapping's file from this process: through the target's root so
    /// that containers work, and through `map_files` when the file was deleted or
    /// replaced after the target mapped it. Once the process has exited its root is gone
    /// (a short-lived child whose samples are resolved after it): then the same path in
    /// parprof's own namespace, if it is the same file (device and inode).
    pub fn file_path(&self, m: &Mapping) -> PathBuf {
        if m.path.ends_with(" (deleted)") {
            return PathBuf::from(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                self.pid, m.start, m.end
            ));
        }
        let through_root = PathBuf::from(format!("/proc/{}/root{}", self.pid, m.path));
        let own = PathBuf::from(&m.path);
        if !through_root.exists() && std::fs::metadata(&own).is_ok_and(|f| m.is_backed_by(&f)) {
            return own;
        }
        through_root
    }

    /// All mappings of the same file as `m` (an ELF image is mapped in several segments).
    pub fn segments_of<'a>(&'a self, m: &'a Mapping) -> impl Iterator<Item = &'a Mapping> + 'a {
        self.mappings
            .iter()
            .filter(move |o| o.inode == m.inode && o.dev == m.dev && o.path == m.path)
    }
}

/// Parse the text of a maps file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
    out.sort_by_key(|m| m.start);
    out
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let dev = it.next()?.to_string();
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        readable: perms.starts_with('r'),
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        dev,
        inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_pseudo_lines() {
        let text = "\
55d0a0000000-55d0a0001000 r--p 00000000 fd:01 1234 /usr/bin/my prog\n\
55d0a0001000-55d0a0002000 r-xp 00001000 fd:01 1234 /usr/bin/my prog\n\
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]\n\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
garbage\n";
        let maps = Maps {
            pid: 1,
            mappings: parse(text),
        };
        assert_eq!(maps.mappings.len(), 4);
        let exe = maps.find(0x55d0a0001800).unwrap();
        assert_eq!(exe.path, "/usr/bin/my prog");
        assert!(exe.executable && exe.is_file());
        assert_eq!(exe.offset, 0x1000);
        assert!(maps.find(0x7ffd1000).unwrap().is_vdso());
        assert!(maps.find(0x10).is_none());
        assert_eq!(maps.segments_of(exe).count(), 2);
    }

    #[test]
    fn files_of_an_exited_process_are_opened_by_path_when_the_same_file() {
        let own = Maps::read(std::process::id() as i32).unwrap();
        let exe = own.mappings.iter().find(|m| m.is_file()).unwrap().clone();
        // A pid that does not exist: its root is gone.
        let gone = Maps {
            pid: i32::MAX,
            mappings: vec![exe.clone()],
        };
        assert_eq!(gone.file_path(&exe), PathBuf::from(&exe.path));
        let other = Mapping {
            inode: exe.inode + 1,
            ..exe.clone()
        };
        assert!(
            gone.file_path(&other).starts_with("/proc"),
            "another file at that path is not used"
        );
        assert!(
            own.file_path(&exe).starts_with("/proc"),
            "a live process's files go through its root"
        );
    }
}
