//! The state file: what must survive a restart so that the nonce rule holds
//! (no two packets under one key with one sequence number, ever) and old
//! packets cannot be replayed into a restarted gateway.
//!
//! It holds, per outbound key (a SHA-256 fingerprint, never the key), the
//! highest sequence number this gateway may have used (a *lease*: granted
//! only after it is on disk), and per inbound (key, SPI) the top of the
//! replay window (saved every second and at a clean stop).
//!
//! Format: text, one record per line, later lines win; appended with fsync
//! and compacted (written to a temporary file, fsynced, renamed) when it
//! grows. A truncated last line (a crash mid-write) is ignored: a lease
//! counts only once its line was synced.
//!
//! ```text
//! espgw-state v1
//! lease <key-id> <highest usable sequence number>
//! replay <key-id> <spi hex> <window top>
//! ```
//!
//! The file is locked while espgw runs, so two processes cannot share it.
//! Deleting it allows sequence numbers to repeat after a restart: only do so
//! when every outbound SA gets new keys.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use espgw_core::esp::KeyId;
use espgw_core::policy::{PolicyDb, StateStore};

const MAGIC: &str = "espgw-state v1";

/// The open, locked state file.
pub struct StateFile {
    path: PathBuf,
    /// Open for appending; holds the lock.
    file: File,
    leases: HashMap<KeyId, u64>,
    tops: HashMap<(KeyId, u32), u64>,
    /// Records appended since the last compaction.
    appended: usize,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .field("leases", &self.leases.len())
            .field("windows", &self.tops.len())
            .finish()
    }
}

fn corrupt(path: &Path, line: usize, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}:{line}: {why} (the state file keeps sequence numbers from repeating; \
             delete it only if every outbound SA gets new keys)",
            path.display()
        ),
    )
}

impl StateFile {
    /// Open (or create, mode 0600) and lock the state file, read it and
    /// compact it.
    pub fn open(path: &Path) -> io::Result<StateFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another running espgw", path.display()),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut st =
            StateFile { path: path.to_path_buf(), file, leases: HashMap::new(), tops: HashMap::new(), appended: 0 };
        st.read()?;
        st.compact()?;
        Ok(st)
    }

    fn read(&mut self) -> io::Result<()> {
        let text = {
            let mut r = BufReader::new(File::open(&self.path)?);
            let mut v = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line)? > 0 {
                v.push(std::mem::take(&mut line));
            }
            v
        };
        for (i, raw) in text.iter().enumerate() {
            let n = i + 1;
            let Some(line) = raw.strip_suffix('\n') else {
                // A record cut short by a crash: never synced, never granted.
                break;
            };
            if n == 1 {
                if line != MAGIC {
                    return Err(corrupt(&self.path, n, "not an espgw state file"));
                }
                continue;
            }
            let f: Vec<&str> = line.split(' ').collect();
            let key = |s: &str| KeyId::from_hex(s).ok_or_else(|| corrupt(&self.path, n, "bad key id"));
            let num = |s: &str| s.parse::<u64>().map_err(|_| corrupt(&self.path, n, "bad number"));
            match f.as_slice() {
                ["lease", k, v] => {
                    let (k, v) = (key(k)?, num(v)?);
                    let e = self.leases.entry(k).or_insert(0);
                    *e = (*e).max(v);
                }
                ["replay", k, spi, v] => {
                    let k = key(k)?;
                    let spi = u32::from_str_radix(spi, 16).map_err(|_| corrupt(&self.path, n, "bad SPI"))?;
                    let e = self.tops.entry((k, spi)).or_insert(0);
                    *e = (*e).max(num(v)?);
                }
                _ => return Err(corrupt(&self.path, n, "unknown record")),
            }
        }
        Ok(())
    }

    /// Rewrite the file with one record per key, atomically.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("state-tmp");
        {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            let mut text = String::with_capacity(64 + 90 * (self.leases.len() + self.tops.len()));
            text.push_str(MAGIC);
            text.push('\n');
            let mut leases: Vec<_> = self.leases.iter().collect();
            leases.sort();
            for (k, v) in leases {
                text.push_str(&format!("lease {} {v}\n", k.to_hex()));
            }
            let mut tops: Vec<_> = self.tops.iter().collect();
            tops.sort();
            for ((k, spi), v) in tops {
                text.push_str(&format!("replay {} {spi:08x} {v}\n", k.to_hex()));
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        // The lock belongs to the old inode: lock the new one (nobody else can
        // have opened it yet: it was created under our lock).
        let file = OpenOptions::new().read(true).append(true).open(&self.path)?;
        file.lock()?;
        self.file = file;
        self.appended = 0;
        Ok(())
    }

    /// Append records and make them durable.
    fn append(&mut self, text: &str, records: usize) -> io::Result<()> {
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.appended += records;
        if self.appended > 4 * (self.leases.len() + self.tops.len()) + 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Save the replay tops that moved since they were last saved.
    pub fn save_replay_tops(&mut self, db: &PolicyDb) -> io::Result<usize> {
        let mut text = String::new();
        let mut n = 0;
        for ((k, spi), w) in db.replay_windows() {
            let top = w.top();
            let saved = self.tops.entry((*k, *spi)).or_insert(0);
            if top > *saved {
                *saved = top;
                text.push_str(&format!("replay {} {spi:08x} {top}\n", k.to_hex()));
                n += 1;
            }
        }
        if n > 0 {
            self.append(&text, n)?;
        }
        Ok(n)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A handle on the state file that the policy database keeps (the control
/// thread also saves replay tops through it).
#[derive(Clone, Debug)]
pub struct SharedState(Arc<Mutex<StateFile>>);

impl SharedState {
    pub fn new(f: StateFile) -> Self {
        SharedState(Arc::new(Mutex::new(f)))
    }
    pub fn lock(&self) -> MutexGuard<'_, StateFile> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for SharedState {
    fn seq_floor(&self, key: &KeyId) -> u64 {
        // The lease is the highest number possibly used: resume after it.
        self.lock().leases.get(key).map_or(1, |v| v.saturating_add(1))
    }

    fn replay_floor(&self, key: &KeyId, spi: u32) -> u64 {
        self.lock().tops.get(&(*key, spi)).copied().unwrap_or(0)
    }

    fn persist_leases(&mut self, leases: &[(KeyId, u64)]) -> io::Result<()> {
        let mut st = self.lock();
        let mut text = String::with_capacity(leases.len() * 90);
        for (k, v) in leases {
            text.push_str(&format!("lease {} {v}\n", k.to_hex()));
        }
        st.append(&text, leases.len())?;
        for (k, v) in leases {
            let e = st.leases.entry(*k).or_insert(0);
            *e = (*e).max(*v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use espgw_core::crypto::Algorithm;

    fn key(b: u8) -> KeyId {
        KeyId::of(Algorithm::AesGcm128, &[b; 20], &[])
    }

    #[test]
    fn leases_and_tops_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.state");
        {
            let mut st = SharedState::new(StateFile::open(&p).unwrap());
            assert_eq!(st.seq_floor(&key(1)), 1);
            st.persist_leases(&[(key(1), 100), (key(2), 7)]).unwrap();
            st.persist_leases(&[(key(1), 5000)]).unwrap();
            st.lock().tops.insert((key(3), 0x1234), 99);
            st.lock().compact().unwrap();
        }
        let st = SharedState::new(StateFile::open(&p).unwrap());
        assert_eq!(st.seq_floor(&key(1)), 5001, "resume after the highest lease");
        assert_eq!(st.seq_floor(&key(2)), 8);
        assert_eq!(st.replay_floor(&key(3), 0x1234), 99);
        assert_eq!(st.replay_floor(&key(3), 0x1235), 0);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4, "compacted: header + one record per key:\n{text}");
        assert!(!text.contains("0101010101010101010101010101010101010101"), "no key material");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_second_process_cannot_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.state");
        let _first = StateFile::open(&p).unwrap();
        let e = StateFile::open(&p).unwrap_err();
        assert!(e.to_string().contains("locked by another running espgw"), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.state");
        let k = key(9).to_hex();
        std::fs::write(&p, format!("{MAGIC}\nlease {k} 10\nlease {k} 999999")).unwrap();
        let st = SharedState::new(StateFile::open(&p).unwrap());
        assert_eq!(st.seq_floor(&key(9)), 11, "the unsynced tail never counted");
        drop(st);
        std::fs::write(&p, format!("{MAGIC}\nlease {k} ten\n")).unwrap();
        let e = StateFile::open(&p).unwrap_err();
        assert!(e.to_string().contains("gw.state:2: bad number"), "{e}");
        std::fs::write(&p, "hello\n").unwrap();
        assert!(StateFile::open(&p).unwrap_err().to_string().contains("not an espgw state file"));
    }
}
