//! Which IIPs a graph's coordinator sent, and to which participants.
//!
//! An IIP is sent once per participant that runs the graph. A coordinator
//! that is killed and started again (or replaced) finds the participants
//! still running: sending their IIPs again would configure them twice. The
//! journal is a small JSON file per graph (under
//! [`crate::transport::state_dir`]) with one entry per target port: the last
//! value sent to it, and the ids of the role's live participants at that
//! moment. An IIP of the starting graph whose port's last value is the same
//! and whose role still has one of those participants alive is taken as
//! sent; a participant that was restarted has a new id and gets it again.
//! Values set live (over the FBP protocol) are always sent; the journal only
//! remembers them as the port's last value. A missing or unreadable journal
//! only means IIPs are sent again (logged), never an error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    role: String,
    port: String,
    payload: String,
    participants: Vec<String>,
}

/// The IIPs sent for one graph, kept in a file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Journal {
    /// Read the journal at `path`; absent or unreadable starts empty.
    pub fn open(path: PathBuf) -> Journal {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "IIP journal unreadable; IIPs are sent again");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Journal { path, entries }
    }

    /// The participant among `alive` that got this value as the port's last
    /// one, if any.
    pub fn sent_to<'a>(&self, role: &str, port: &str, payload: &[u8], alive: &[&'a str]) -> Option<&'a str> {
        let payload = String::from_utf8_lossy(payload);
        let e = self.entries.iter().find(|e| e.role == role && e.port == port && e.payload == payload)?;
        alive.iter().copied().find(|id| e.participants.iter().any(|p| p == id))
    }

    /// Note that the value went to the port's queue while `participants`
    /// were alive (it replaces the port's earlier value), and write the file
    /// (atomically: a temp file renamed over it).
    pub fn record(&mut self, role: &str, port: &str, payload: &[u8], participants: Vec<String>) {
        let payload = String::from_utf8_lossy(payload).into_owned();
        self.entries.retain(|e| !(e.role == role && e.port == port));
        self.entries.push(Entry { role: role.into(), port: port.into(), payload, participants });
        if let Err(e) = self.save() {
            warn!(path = %self.path.display(), error = %e, "cannot write the IIP journal; a restarted coordinator sends these IIPs again");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.entries)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("msgflo-journal-{}", uuid::Uuid::new_v4().simple())).join("iips.json")
    }

    #[test]
    fn an_iip_counts_as_sent_while_a_participant_that_got_it_lives() {
        let path = temp();
        let mut j = Journal::open(path.clone());
        assert_eq!(j.sent_to("a", "in", b"1", &["a-1"]), None);
        j.record("a", "in", b"1", vec!["a-1".into(), "a-2".into()]);
        // A new coordinator reads what the killed one wrote.
        let j = Journal::open(path.clone());
        assert_eq!(j.sent_to("a", "in", b"1", &["a-9", "a-2"]), Some("a-2"));
        // Restarted participants (new ids), another value, another port: sent again.
        assert_eq!(j.sent_to("a", "in", b"1", &["a-3"]), None);
        assert_eq!(j.sent_to("a", "in", b"2", &["a-1"]), None);
        assert_eq!(j.sent_to("a", "other", b"1", &["a-1"]), None);
        assert_eq!(j.sent_to("b", "in", b"1", &["a-1"]), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_value_sent_again_replaces_its_entry() {
        let path = temp();
        let mut j = Journal::open(path.clone());
        j.record("a", "in", b"1", vec!["a-1".into()]);
        j.record("a", "in", b"1", vec!["a-5".into()]);
        let j = Journal::open(path.clone());
        assert_eq!(j.entries.len(), 1);
        assert_eq!(j.sent_to("a", "in", b"1", &["a-1"]), None);
        assert_eq!(j.sent_to("a", "in", b"1", &["a-5"]), Some("a-5"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn only_the_last_value_of_a_port_counts() {
        // 1, then 2, then 1 again on a live participant: after the 2, the 1
        // is not the port's value any more.
        let path = temp();
        let mut j = Journal::open(path.clone());
        j.record("a", "in", b"1", vec!["a-1".into()]);
        j.record("a", "in", b"2", vec!["a-1".into()]);
        assert_eq!(j.sent_to("a", "in", b"1", &["a-1"]), None);
        assert_eq!(j.sent_to("a", "in", b"2", &["a-1"]), Some("a-1"));
        j.record("a", "other", b"1", vec!["a-1".into()]);
        assert_eq!(j.entries.len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_broken_journal_is_empty_not_an_error() {
        let path = temp();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        let j = Journal::open(path.clone());
        assert_eq!(j.sent_to("a", "in", b"1", &["a-1"]), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
