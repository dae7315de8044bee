//! Reads SQLite's write-ahead log (the `-wal` file) to tell a log a crash left behind from a
//! damaged one, before SQLite opens it.
//!
//! SQLite itself never complains: at start-up it replays frames while their salts match the
//! header and their running checksum holds, and silently drops the rest, so a log truncated or
//! overwritten in the middle loses every commit after the damage without a word. Here the frames
//! are checked the same way, and then the rest of the file is read too: a commit frame that
//! still carries this log's salts and whose checksum holds against the frame before it is a
//! transaction that was committed (and, for the uplink path, acknowledged) but that SQLite would
//! drop. What a crash (SIGKILL, power cut) legitimately leaves behind is told apart:
//! - frames from before the log was last rewound carry older salts (SQLite picks new ones at
//!   every rewind) and are not ours to count;
//! - the transaction that was being written when the process died never reached its commit
//!   frame, or reached it half-written (SQLite writes a frame's 24-byte header and its page in
//!   two writes): no complete commit frame follows the break;
//! - `journal_size_limit` cuts the file at a byte count that need not fall on a frame boundary,
//!   but only while rewinding, so the cut frame carries older salts.
//!
//! A log truncated exactly on a frame boundary looks like a clean one and is not detected.
//! The format: <https://www.sqlite.org/fileformat.html#the_write_ahead_log>.

use std::io::Read;
use std::path::{Path, PathBuf};

const HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 24;
const MAGIC_LITTLE_ENDIAN: u32 = 0x377f_0682;
const MAGIC_BIG_ENDIAN: u32 = 0x377f_0683;
const FORMAT_VERSION: u32 = 3_007_000;

/// What the check found in one `-wal` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReport {
    pub wal: PathBuf,
    /// Frames SQLite will replay, and the committed transactions among them.
    pub valid_frames: u64,
    pub valid_commits: u64,
    /// `None` when SQLite replays everything committed in the file.
    pub damage: Option<WalDamage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDamage {
    /// Byte offset of the first frame SQLite will not replay.
    pub at_byte: u64,
    /// Committed transactions after that point (each ends with a commit frame that is intact),
    /// which SQLite would drop; `None` when the header itself is unreadable and nothing can be
    /// counted.
    pub lost_commits: Option<u64>,
    /// Frames (pages) of this log after that point.
    pub lost_frames: u64,
    /// The file's length when it ends inside a frame: whatever was committed after it is gone.
    pub cut_at: Option<u64>,
    pub why: String,
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.lost_commits, self.cut_at) {
            (Some(commits), Some(cut)) => write!(
                f,
                "{} at byte {cut}: every committed transaction written after that is gone, and {} page frame(s) \
                 from byte {} on ({commits} intact commits among them) would be dropped",
                self.why, self.lost_frames, self.at_byte
            ),
            (Some(commits), None) => write!(
                f,
                "{} from byte {}: at least {commits} committed transaction(s) ({} page frame(s)) after it would be lost",
                self.why, self.at_byte, self.lost_frames
            ),
            (None, _) => write!(f, "{}: every transaction in it ({} bytes) would be lost", self.why, self.at_byte),
        }
    }
}

fn word(bytes: &[u8], big_endian: bool) -> u32 {
    let b: [u8; 4] = bytes[..4].try_into().unwrap();
    if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

fn be(bytes: &[u8]) -> u32 {
    word(bytes, true)
}

/// SQLite's WAL checksum (`walChecksumBytes`): Fibonacci-weighted sums of 32-bit words in the
/// byte order the magic number names, continued from `seed`.
/// The memory page size of the kernels we run on (x86_64 and aarch64 Linux defaults).
const OS_PAGE_BYTES: usize = 4096;

fn checksum(seed: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[..4], big_endian)).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..], big_endian)).wrapping_add(s1);
    }
    (s1, s2)
}

/// Checks the `-wal` file of the database at `db`; `Ok(None)` when there is none (or it is
/// empty, as a checkpoint with TRUNCATE or a clean close leaves it).
pub fn check_wal(db: &Path) -> std::io::Result<Option<WalReport>> {
    let wal = crate::sqlite::wal_path(db);
    let mut bytes = Vec::new();
    match std::fs::File::open(&wal) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(scan(wal, &bytes)))
}

fn scan(wal: PathBuf, bytes: &[u8]) -> WalReport {
    let unreadable = |why: &str| WalReport {
        wal: wal.clone(),
        valid_frames: 0,
        valid_commits: 0,
        damage: Some(WalDamage { at_byte: bytes.len() as u64, lost_commits: None, lost_frames: 0, cut_at: None, why: why.into() }),
    };
    if bytes.len() < HEADER_BYTES {
        return unreadable("the header is cut short");
    }
    let magic = be(&bytes[0..]);
    if magic != MAGIC_LITTLE_ENDIAN && magic != MAGIC_BIG_ENDIAN {
        return unreadable("the header's magic number is wrong");
    }
    let big_endian = magic == MAGIC_BIG_ENDIAN;
    let page_size = be(&bytes[8..]) as usize;
    if be(&bytes[4..]) != FORMAT_VERSION || !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return unreadable("the header names an unknown format or page size");
    }
    let salts = (be(&bytes[16..]), be(&bytes[20..]));
    let header_sum = (be(&bytes[24..]), be(&bytes[28..]));
    if checksum((0, 0), &bytes[..24], big_endian) != header_sum {
        return unreadable("the header's checksum does not match");
    }
    let frame_bytes = FRAME_HEADER_BYTES + page_size;
    // A frame's running checksum, continued from `seed`, and whether it matches what it stores.
    let frame_holds = |frame: &[u8], seed: (u32, u32)| {
        let sum = checksum(checksum(seed, &frame[..8], big_endian), &frame[FRAME_HEADER_BYTES..], big_endian);
        (be(&frame[8..]), be(&frame[12..])) == salts && sum == (be(&frame[16..]), be(&frame[20..]))
    };
    let stored_sum = |frame: &[u8]| (be(&frame[16..]), be(&frame[20..]));
    let is_commit = |frame: &[u8]| be(&frame[4..]) != 0;

    let frames: Vec<&[u8]> = bytes[HEADER_BYTES..].chunks(frame_bytes).collect();
    // SQLite's own replay: frames while the chain holds, up to the last commit frame.
    let (mut valid_frames, mut valid_commits, mut seed, mut chain) = (0u64, 0u64, header_sum, 0usize);
    while chain < frames.len() && frames[chain].len() == frame_bytes && frame_holds(frames[chain], seed) {
        seed = stored_sum(frames[chain]);
        chain += 1;
        if is_commit(frames[chain - 1]) {
            valid_frames = chain as u64;
            valid_commits += 1;
        }
    }
    // After it: intact commit frames of this log mean committed transactions SQLite would drop.
    let break_at = valid_frames as usize;
    let (mut lost_commits, mut lost_frames, mut cut_short) = (0u64, 0u64, false);
    for i in break_at..frames.len() {
        let frame = frames[i];
        if frame.len() < FRAME_HEADER_BYTES {
            continue;
        }
        let ours = (be(&frame[8..]), be(&frame[12..])) == salts;
        if !ours {
            continue;
        }
        lost_frames += 1;
        if frame.len() < frame_bytes {
            // A crash between the two writes of a frame leaves exactly its header. A kill -9
            // during the page's write can also stop it short: Linux copies a write into the page
            // cache one memory page at a time and gives up between pages once a fatal signal is
            // pending, so the file then ends on a 4 KiB boundary (seen in the crash test). That
            // last frame belongs to a transaction whose commit was never written, let alone
            // acknowledged. Any other length was cut by something else.
            let killed_mid_write = bytes.len().is_multiple_of(OS_PAGE_BYTES);
            cut_short = frame.len() != FRAME_HEADER_BYTES && !killed_mid_write;
            continue;
        }
        let previous = if i == 0 { header_sum } else if frames[i - 1].len() >= FRAME_HEADER_BYTES { stored_sum(frames[i - 1]) } else { continue };
        if is_commit(frame) && frame_holds(frame, previous) {
            lost_commits += 1;
        }
    }
    let damage = if lost_commits > 0 {
        Some(WalDamage {
            at_byte: (HEADER_BYTES + break_at * frame_bytes) as u64,
            lost_commits: Some(lost_commits),
            lost_frames,
            cut_at: cut_short.then_some(bytes.len() as u64),
            why: "frames do not match their checksums".into(),
        })
    } else if cut_short {
        Some(WalDamage {
            at_byte: (HEADER_BYTES + break_at * frame_bytes) as u64,
            lost_commits: Some(lost_commits),
            lost_frames,
            cut_at: Some(bytes.len() as u64),
            why: "the file is cut short in the middle of a frame".into(),
        })
    } else {
        None
    };
    WalReport { wal, valid_frames, valid_commits, damage }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log as SQLite writes it: header, then frames chained by their checksums.
    fn log(page_size: usize, salts: (u32, u32), frames: &[(u32, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC_LITTLE_ENDIAN.to_be_bytes());
        out.extend(FORMAT_VERSION.to_be_bytes());
        out.extend((page_size as u32).to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(salts.0.to_be_bytes());
        out.extend(salts.1.to_be_bytes());
        let mut sum = checksum((0, 0), &out, false);
        out.extend(sum.0.to_be_bytes());
        out.extend(sum.1.to_be_bytes());
        for &(page, commit) in frames {
            let mut frame = Vec::new();
            frame.extend(page.to_be_bytes());
            frame.extend(commit.to_be_bytes());
            frame.extend(salts.0.to_be_bytes());
            frame.extend(salts.1.to_be_bytes());
            let data = vec![page as u8; page_size];
            sum = checksum(checksum(sum, &frame[..8], false), &data, false);
            frame.extend(sum.0.to_be_bytes());
            frame.extend(sum.1.to_be_bytes());
            frame.extend(data);
            out.extend(frame);
        }
        out
    }

    fn check(bytes: &[u8]) -> WalReport {
        scan(PathBuf::from("x.db-wal"), bytes)
    }

    const FRAME: usize = FRAME_HEADER_BYTES + 512;
    /// Three transactions: frames 1-2, 3-4 and 5 (commit frames 2, 4, 5).
    fn three_commits() -> Vec<u8> {
        log(512, (7, 9), &[(2, 0), (3, 5), (2, 0), (4, 5), (5, 6)])
    }

    #[test]
    fn an_intact_log_replays_every_commit() {
        let report = check(&three_commits());
        assert_eq!((report.valid_frames, report.valid_commits, report.damage), (5, 3, None));
    }

    #[test]
    fn a_crash_mid_transaction_is_not_damage() {
        let mut bytes = log(512, (7, 9), &[(2, 0), (3, 5), (2, 0), (4, 0)]);
        // Killed between a frame's header and its page.
        bytes.extend_from_slice(&log(512, (7, 9), &[(2, 0), (3, 5), (2, 0), (4, 0), (6, 7)])[HEADER_BYTES + 4 * FRAME..][..24]);
        assert_eq!(check(&bytes).damage, None);
        // Frames of an older generation (other salts) after the chain: stale, not ours.
        let mut stale = three_commits();
        stale.extend_from_slice(&log(512, (6, 1), &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 3)])[HEADER_BYTES + 5 * FRAME..]);
        stale.truncate(stale.len() - 100);
        assert_eq!(check(&stale).damage, None);
    }

    #[test]
    fn an_overwritten_frame_loses_the_commits_after_it() {
        let mut bytes = three_commits();
        // Frame 2 (the first commit frame) overwritten in its page.
        bytes[HEADER_BYTES + FRAME + 100] ^= 0xff;
        let report = check(&bytes);
        let damage = report.damage.expect("damage");
        assert_eq!((report.valid_commits, damage.lost_commits, damage.at_byte), (0, Some(2), HEADER_BYTES as u64));
    }

    #[test]
    fn a_frame_cut_on_a_memory_page_boundary_is_a_killed_write_not_damage() {
        // Two committed transactions, then the first frame of a third being written with
        // 4 KiB pages; the file ends on a 4 KiB boundary inside that frame, as a kill -9 during
        // the frame's write leaves it.
        const BIG: usize = FRAME_HEADER_BYTES + 4096;
        let bytes = log(4096, (7, 9), &[(2, 0), (3, 5), (2, 6), (4, 0)]);
        let end = (HEADER_BYTES + 4 * BIG) / OS_PAGE_BYTES * OS_PAGE_BYTES;
        assert!(end > HEADER_BYTES + 3 * BIG + FRAME_HEADER_BYTES && end < HEADER_BYTES + 4 * BIG);
        let report = check(&bytes[..end]);
        assert_eq!(report.valid_commits, 2);
        assert_eq!(report.damage, None);
        // One byte further is no page boundary: cut by something else.
        assert!(check(&bytes[..end + 1]).damage.is_some());
    }

    #[test]
    fn a_log_cut_inside_a_frame_is_damage() {
        let bytes = three_commits();
        let report = check(&bytes[..HEADER_BYTES + 3 * FRAME + 300]);
        assert_eq!(report.valid_commits, 1);
        assert!(report.damage.unwrap().why.contains("cut short"));
    }

    #[test]
    fn an_unreadable_header_loses_everything() {
        let mut bytes = three_commits();
        bytes[17] ^= 1;
        let damage = check(&bytes).damage.unwrap();
        assert_eq!(damage.lost_commits, None);
        assert!(check(&bytes[..20]).damage.is_some());
    }
}
