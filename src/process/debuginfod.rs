//! The debuginfod client: a module's separate debug file fetched by build id from the
//! servers `DEBUGINFOD_URLS` names (elfutils' protocol and environment variables), for
//! modules whose debug file is not installed. With the variable unset or empty nothing here
//! touches the network.
//!
//! Downloads are kept in elfutils' cache layout, `<cache>/<build id>/debuginfo`, so gdb,
//! perf and parprof share what any of them fetched; the cache is read first. A server that
//! cannot be reached is named in one warning line and not asked again in this run, and
//! connecting gets one second, so a server that is down costs about that once. Only the
//! resolver thread asks (through `module::debug_file`): sampling never waits on the network.
//!
//! A downloaded file is untrusted: it is size-capped, and it must parse as ELF and carry
//! the build id asked for before it is used or kept in the cache.
//!
//! The state (servers that failed, the answer for each build id) is process-wide: the
//! unwinder and the symbolizer each load a module on their own and ask for the same build
//! ids, and a static keeps one answer for both without threading a handle through them and
//! every one of their callers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use object::Object;

use super::elf::ElfImage;

/// How long name lookup and connecting (TCP and TLS) may each take: a server that is down
/// or unreachable costs this once, then is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Seconds a server may go without sending anything, unless `DEBUGINFOD_TIMEOUT` says
/// otherwise. Shorter than elfutils' 90: the resolver waits meanwhile, and the sampler's
/// queue holds about ten seconds of ticks at the default rate.
const DEFAULT_TIMEOUT_S: u64 = 10;

/// The largest debug file accepted. The biggest real ones (a browser's) are a few GiB
/// uncompressed; those parprof skips rather than let a server fill the disk.
const MAX_SIZE: u64 = 1 << 30;

/// The separate debug file of the image with `build_id`, from the cache or a server.
/// `None` when `DEBUGINFOD_URLS` is unset or no server has it.
pub fn debug_file(build_id: &[u8]) -> Option<ElfImage> {
    static CLIENT: OnceLock<Option<Mutex<Client>>> = OnceLock::new();
    let client = CLIENT
        .get_or_init(|| Client::from_env().map(Mutex::new))
        .as_ref()?;
    client
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .debug_file(build_id)
}

struct Client {
    servers: Vec<Server>,
    cache: PathBuf,
    agent: ureq::Agent,
    timeout_s: u64,
    /// Each build id asked for and what came of it: nothing is fetched twice in a run.
    answers: HashMap<Vec<u8>, Option<ElfImage>>,
}

struct Server {
    url: String,
    /// Unreachable once: not asked again in this run.
    down: bool,
}

impl Client {
    fn from_env() -> Option<Client> {
        let urls = std::env::var("DEBUGINFOD_URLS").unwrap_or_default();
        let servers: Vec<Server> = urls
            .split_whitespace()
            .map(|u| Server {
                url: u.trim_end_matches('/').to_string(),
                down: false,
            })
            .collect();
        if servers.is_empty() {
            return None;
        }
        let Some(cache) = cache_dir(|k| std::env::var_os(k)) else {
            eprintln!(
                "parprof: no debuginfod cache directory (set DEBUGINFOD_CACHE_PATH or HOME); \
                 debuginfod servers are not asked"
            );
            return None;
        };
        let timeout_s = std::env::var("DEBUGINFOD_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_TIMEOUT_S);
        let agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(Duration::from_secs(timeout_s)))
            .http_status_as_error(false)
            .build()
            .into();
        Some(Client {
            servers,
            cache,
            agent,
            timeout_s,
            answers: HashMap::new(),
        })
    }

    fn debug_file(&mut self, build_id: &[u8]) -> Option<ElfImage> {
        if let Some(answer) = self.answers.get(build_id) {
            return answer.clone();
        }
        let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.cache.join(&hex);
        let answer = checked(&dir.join("debuginfo"), build_id)
            .or_else(|| self.download(&hex, build_id, &dir));
        self.answers.insert(build_id.to_vec(), answer.clone());
        answer
    }

    /// Ask each server that is not down, in order, until one has the file; keep it in the
    /// cache directory `dir`.
    fn download(&mut self, hex: &str, build_id: &[u8], dir: &Path) -> Option<ElfImage> {
        let several = self.servers.len() > 1;
        for server in self.servers.iter_mut().filter(|s| !s.down) {
            let url = format!("{}/buildid/{hex}/debuginfo", server.url);
            let fetched = match self.agent.get(&url).call() {
                Ok(r) if r.status() == 404 => continue, // the server has no such file
                Ok(r) if r.status() != 200 => Err(format!("answered HTTP {}", r.status())),
                Ok(r) => save(r.into_body().into_reader(), dir).map_err(|e| e.to_string()),
                Err(e) => Err(describe(&e, self.timeout_s)),
            };
            let tmp = match fetched {
                Ok(Some(tmp)) => tmp,
                Ok(None) => {
                    eprintln!(
                        "parprof: debuginfod server {}: the debug file of build id {hex} is over {} MiB; skipped",
                        server.url,
                        MAX_SIZE >> 20
                    );
                    continue;
                }
                Err(what) => {
                    server.down = true;
                    let rest = if several {
                        "symbols come from local files and the other servers"
                    } else {
                        "symbols come from local files only"
                    };
                    eprintln!(
                        "parprof: debuginfod server {}: {what}; {rest} (remove it from DEBUGINFOD_URLS to skip it)",
                        server.url
                    );
                    continue;
                }
            };
            if let Some(image) = checked(&tmp, build_id) {
                // Used even when it cannot be kept: the mapping outlives the file's name.
                if std::fs::rename(&tmp, dir.join("debuginfo")).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                return Some(image);
            }
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "parprof: debuginfod server {}: the file sent for build id {hex} is not an ELF debug file with that build id; ignored",
                server.url
            );
        }
        None
    }
}

/// Where elfutils' client keeps its downloads: `DEBUGINFOD_CACHE_PATH`, else
/// `$XDG_CACHE_HOME/debuginfod_client`, else `~/.cache/debuginfod_client`. `env` reads a
/// variable.
fn cache_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("DEBUGINFOD_CACHE_PATH")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("debuginfod_client")))
        .or_else(|| set("HOME").map(|d| d.join(".cache/debuginfod_client")))
}

/// The ELF file at `path` if it carries `build_id`: what a server sent, or a cached file
/// (which another program, or a crash mid-write of an older client, may have left bad).
fn checked(path: &Path, build_id: &[u8]) -> Option<ElfImage> {
    let image = ElfImage::open(path).ok()?;
    let matches = image.object()?.build_id().ok()?? == build_id;
    matches.then_some(image)
}

/// Write a response body into a temporary file in `dir` (so the rename that keeps it is
/// atomic: no reader ever sees half a file). `None` when it is over `MAX_SIZE`.
fn save(body: impl Read, dir: &Path) -> io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".debuginfo.parprof-{}", std::process::id()));
    let copied = io::copy(
        &mut body.take(MAX_SIZE + 1),
        &mut std::fs::File::create(&tmp)?,
    );
    match copied {
        Ok(n) if n <= MAX_SIZE => Ok(Some(tmp)),
        other => {
            let _ = std::fs::remove_file(&tmp);
            other.map(|_| None)
        }
    }
}

/// What went wrong reaching a server, for its warning line.
fn describe(e: &ureq::Error, timeout_s: u64) -> String {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        }
        ureq::Error::Timeout(_) => format!("silent for {timeout_s} s (DEBUGINFOD_TIMEOUT)"),
        ureq::Error::Io(e) if e.kind() != io::ErrorKind::Other => e.kind().to_string(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_elfutils_order() {
        fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all = [
            ("DEBUGINFOD_CACHE_PATH", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir(env(&all)), Some("/c".into()));
        assert_eq!(
            cache_dir(env(&all[1..])),
            Some("/x/debuginfod_client".into())
        );
        assert_eq!(
            cache_dir(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            Some("/h/.cache/debuginfod_client".into())
        );
        assert_eq!(cache_dir(env(&[])), None);
    }

    #[test]
    fn only_an_elf_file_with_the_build_id_asked_for_is_accepted() {
        let exe = std::env::current_exe().unwrap();
        let image = ElfImage::open(&exe).unwrap();
        let id = image
            .object()
            .unwrap()
            .build_id()
            .unwrap()
            .unwrap()
            .to_vec();
        assert!(checked(&exe, &id).is_some());
        let mut other = id.clone();
        other[0] ^= 1;
        assert!(checked(&exe, &other).is_none());
        let not_elf = std::env::temp_dir().join(format!("parprof-not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, b"<html>404</html>").unwrap();
        assert!(checked(&not_elf, &id).is_none());
        std::fs::remove_file(&not_elf).unwrap();
    }
}
