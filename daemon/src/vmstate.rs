//! The VMs as labd's observers (Prometheus metrics, MQTT) see them: a [`VmTable`] built from
//! `Core::list_vms()` and kept current by the VM events in between.
//!
//! The list costs a `zfs get` and is read off the scrape and publish paths (at each refresh);
//! the events (`vm.*`, docs/api.md section 7) carry every transition of the supervisor, so
//! folding them shows a crash, a restart or a stop the moment it happens, without touching ZFS.
//!
//! Which source wins: the list gives what only ZFS knows (which VMs exist, uuid, template,
//! CPUs, memory, `broken`); the state (`state`, `pid`, `last_exit`, `restarts`, `message`) of a
//! VM comes from its events once one has been seen, and from the list before that (a VM
//! adopted before the observer subscribed, or after the observer fell behind the bus: then
//! [`VmTable::forget_events`] hands the state back to the next list). A list read while
//! events arrive may be older than they are, so a refresh is bracketed by
//! [`VmTable::begin_resync`] and [`VmTable::finish_resync`]: VMs created or destroyed by
//! events in between are replayed over the list, and a destroyed VM never comes back from a
//! stale list.
//!
//! The table also keeps what only events can count (restarts, exits by meaning, crashes, the
//! last start), since labd started; a VM's figures go with it when it is destroyed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::wire::{self, Event};

/// Every state a VM can be in (docs/api.md section 7), in the order metrics list them.
pub const STATES: &[&str] = &[
    "running",
    "stopping",
    "restarting",
    "stopped",
    "crashed",
    "broken",
];

/// What a run's end can mean (`vm.exited` `meaning`); anything else counts as `unknown`.
pub const MEANINGS: &[&str] = &["poweroff", "reboot", "halt", "fault", "unknown"];

/// Creations and deletions remembered during one resync at most (a refresh lasts seconds).
const MAX_RECENT: usize = 1024;

/// One VM as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmView {
    /// The VM's name.
    pub name: String,
    /// Its uuid, when known.
    pub uuid: Option<String>,
    /// The template it was made from (empty when unknown).
    pub template: String,
    /// vCPUs (unknown until the list has it, e.g. right after `vm.created`).
    pub cpus: Option<u32>,
    /// Memory in bytes (as `cpus`).
    pub memory: Option<u64>,
    /// One of [`STATES`].
    pub state: String,
    /// The hypervisor's pid while it runs.
    pub pid: Option<u32>,
    /// How the last run ended, once labd has seen one end since the VM was started.
    pub last_exit: Option<String>,
    /// Restarts by the supervisor since the VM was started.
    pub restarts: u32,
    /// Why it is `crashed`, or when it restarts.
    pub message: Option<String>,
    /// When labd last started its hypervisor (`vm.started`, restarts included).
    pub started_at: Option<Timestamp>,
    /// Supervisor restarts (`vm.restarting`) since labd started.
    pub restarts_total: u64,
    /// Ended runs (`vm.exited`) since labd started, by [`MEANINGS`] index.
    pub exits_total: [u64; MEANINGS.len()],
    /// Times the supervisor gave up (`vm.crashed`) since labd started.
    pub crashes_total: u64,
    /// The state came from events (so a list read earlier must not overwrite it).
    evented: bool,
}

impl VmView {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: "stopped".to_owned(),
            ..Self::default()
        }
    }

    /// From one VM of `Core::list_vms()`.
    fn from_wire(vm: &wire::Vm) -> Self {
        let known = vm.state != "broken";
        Self {
            name: vm.name.clone(),
            uuid: vm.uuid.map(|u| u.to_string()),
            template: vm.template.clone(),
            cpus: known.then_some(vm.cpus),
            memory: known.then_some(vm.memory),
            state: vm.state.clone(),
            pid: vm.pid,
            last_exit: vm.last_exit.clone(),
            restarts: vm.restarts,
            message: vm.message.clone(),
            ..Self::default()
        }
    }

    /// Whether the hypervisor runs (`running`, or `stopping` until it is gone).
    pub fn up(&self) -> bool {
        matches!(self.state.as_str(), "running" | "stopping")
    }

    /// The MQTT state document. Uptime is given as the start time of the running hypervisor
    /// (`started_at`, RFC 3339) so that the retained document changes only when the VM does.
    pub fn document(&self) -> Value {
        let started_at = self.started_at.filter(|_| self.up()).map(|t| t.to_string());
        json!({
            "started_at": started_at,
            "name": self.name,
            "uuid": self.uuid,
            "template": self.template,
            "state": self.state,
            "pid": self.pid,
            "last_exit": self.last_exit,
            "restarts": self.restarts,
            "message": self.message,
            "cpus": self.cpus,
            "memory": self.memory,
        })
    }
}

/// What an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The VM's view changed (or appeared).
    Updated(String),
    /// The VM is gone.
    Removed(String),
}

/// The VMs observed, by name.
#[derive(Debug, Default)]
pub struct VmTable {
    vms: BTreeMap<String, VmView>,
    /// While a resync is open: VMs created (`true`) or destroyed (`false`) since it began.
    recent: Option<Vec<(String, bool)>>,
}

/// `data[key]` as a string.
fn text(data: &Value, key: &str) -> Option<String> {
    data[key].as_str().map(str::to_owned)
}

/// `data[key]` as a u32.
fn small(data: &Value, key: &str) -> Option<u32> {
    data[key].as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The index in [`MEANINGS`] of an exit meaning (`unknown` for anything else).
pub fn meaning_index(meaning: &str) -> usize {
    MEANINGS
        .iter()
        .position(|m| *m == meaning)
        .unwrap_or(MEANINGS.len() - 1)
}

impl VmTable {
    /// The VMs, by name.
    pub fn iter(&self) -> impl Iterator<Item = &VmView> {
        self.vms.values()
    }

    /// One VM.
    pub fn get(&self, name: &str) -> Option<&VmView> {
        self.vms.get(name)
    }

    /// Fold one event in; says which VM changed, if any.
    pub fn apply(&mut self, event: &Event) -> Option<Change> {
        let name = event.resource.as_str();
        let data = &event.data;
        match event.kind.as_str() {
            "vm.created" => {
                let mut vm = VmView::new(name);
                vm.uuid = text(data, "uuid");
                vm.template = text(data, "template").unwrap_or_default();
                vm.evented = true;
                self.vms.insert(name.to_owned(), vm);
                self.remember(name, true);
                return Some(Change::Updated(name.to_owned()));
            }
            "vm.destroyed" => {
                self.vms.remove(name);
                self.remember(name, false);
                return Some(Change::Removed(name.to_owned()));
            }
            // `vm.stop` and `vm.restart` jobs of a running VM: the supervisor is `stopping` it.
            // No event says so, so the next list may overrule this (`evented` is not set).
            "job.started" => {
                let stop = matches!(data["kind"].as_str(), Some("vm.stop" | "vm.restart"));
                let vm = self
                    .vms
                    .get_mut(name)
                    .filter(|v| stop && v.state == "running")?;
                vm.state = "stopping".to_owned();
                vm.evented = false;
                return Some(Change::Updated(name.to_owned()));
            }
            "vm.started" | "vm.adopted" | "vm.exited" | "vm.restarting" | "vm.crashed"
            | "vm.stopped" => {}
            _ => return None,
        }
        let vm = self
            .vms
            .entry(name.to_owned())
            .or_insert_with(|| VmView::new(name));
        vm.evented = true;
        match event.kind.as_str() {
            "vm.started" | "vm.adopted" => {
                vm.state = "running".to_owned();
                vm.pid = small(data, "pid");
                vm.message = None;
                match small(data, "restart") {
                    Some(n) => vm.restarts = n,
                    // A new watch: the supervisor's figures start again.
                    None => {
                        vm.restarts = 0;
                        vm.last_exit = None;
                    }
                }
                if event.kind == "vm.started" {
                    vm.started_at = Some(event.time);
                }
            }
            "vm.exited" => {
                let meaning = data["meaning"].as_str().unwrap_or("unknown");
                vm.pid = None;
                vm.last_exit = Some(meaning.to_owned());
                if let Some(n) = vm.exits_total.get_mut(meaning_index(meaning)) {
                    *n += 1;
                }
            }
            "vm.restarting" => {
                let meaning = data["meaning"].as_str().unwrap_or("unknown");
                let delay = data["delay_ms"].as_u64().unwrap_or(0);
                vm.state = "restarting".to_owned();
                vm.pid = None;
                vm.restarts = small(data, "attempt").unwrap_or(vm.restarts.saturating_add(1));
                vm.message = Some(format!("{meaning}; starting again in {delay}ms"));
                vm.restarts_total += 1;
            }
            "vm.crashed" => {
                vm.state = "crashed".to_owned();
                vm.pid = None;
                vm.message = text(data, "reason");
                vm.crashes_total += 1;
            }
            // "vm.stopped": the final state.
            _ => {
                vm.state = text(data, "state").unwrap_or_else(|| "stopped".to_owned());
                vm.pid = None;
                vm.message = text(data, "message");
            }
        }
        Some(Change::Updated(name.to_owned()))
    }

    /// The observer fell behind the event bus: states are taken from the next list again.
    pub fn forget_events(&mut self) {
        for vm in self.vms.values_mut() {
            vm.evented = false;
        }
    }

    /// A list is about to be read: remember creations and deletions until it is applied.
    pub fn begin_resync(&mut self) {
        self.recent = Some(Vec::new());
    }

    /// Apply the list read since [`Self::begin_resync`] (`None`: it could not be read, the
    /// table stays as the events left it).
    pub fn finish_resync(&mut self, list: Option<Vec<wire::Vm>>) {
        let recent = self.recent.take().unwrap_or_default();
        let Some(list) = list else {
            return;
        };
        let mut old = std::mem::take(&mut self.vms);
        for listed in &list {
            let mut vm = VmView::from_wire(listed);
            if let Some(prev) = old.remove(&listed.name) {
                // Another VM by the same name (destroyed and made again outside labd's events)
                // starts from nothing.
                let same = prev.uuid.is_none() || vm.uuid.is_none() || prev.uuid == vm.uuid;
                if same {
                    vm.started_at = prev.started_at;
                    vm.restarts_total = prev.restarts_total;
                    vm.exits_total = prev.exits_total;
                    vm.crashes_total = prev.crashes_total;
                    if prev.evented && vm.state != "broken" {
                        vm.state = prev.state;
                        vm.pid = prev.pid;
                        vm.last_exit = prev.last_exit;
                        vm.restarts = prev.restarts;
                        vm.message = prev.message;
                        vm.evented = true;
                    }
                }
            }
            self.vms.insert(listed.name.clone(), vm);
        }
        // The list may predate these.
        for (name, exists) in recent {
            if exists {
                if let Some(prev) = old.remove(&name) {
                    self.vms.entry(name).or_insert(prev);
                }
            } else {
                self.vms.remove(&name);
            }
        }
    }

    fn remember(&mut self, name: &str, exists: bool) {
        if let Some(recent) = self.recent.as_mut()
            && recent.len() < MAX_RECENT
        {
            recent.push((name.to_owned(), exists));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, vm: &str, data: Value) -> Event {
        Event {
            seq: 1,
            time: Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            kind: kind.to_owned(),
            resource: vm.to_owned(),
            actor: None,
            data,
        }
    }

    fn listed(name: &str, state: &str) -> wire::Vm {
        let uuid = uuid::Uuid::from_u128(7);
        serde_json::from_value(json!({
            "name": name, "uuid": uuid, "template": "tiny", "cpus": 2, "memory": 536_870_912,
            "loader": "kernel", "disks": [], "nics": [], "dataset": format!("tank/labd/vms/{name}"),
            "state": state,
        }))
        .expect("a wire VM")
    }

    #[test]
    fn a_crash_and_restart_fold_like_the_supervisor() {
        let mut t = VmTable::default();
        t.begin_resync();
        t.finish_resync(Some(vec![listed("web", "stopped")]));
        let web = t.get("web").expect("web");
        assert_eq!(
            (web.state.as_str(), web.cpus, web.memory),
            ("stopped", Some(2), Some(512 << 20))
        );
        assert!(!web.up());

        let seq = [
            event(
                "vm.started",
                "web",
                json!({"pid": 100, "driver": "qemu", "accel": "tcg"}),
            ),
            event(
                "vm.exited",
                "web",
                json!({"meaning": "fault", "status": "signal: 9 (SIGKILL)", "killed": false, "ran_s": 3}),
            ),
            event(
                "vm.restarting",
                "web",
                json!({"meaning": "fault", "delay_ms": 200, "attempt": 1}),
            ),
        ];
        for e in &seq {
            assert_eq!(t.apply(e), Some(Change::Updated("web".into())));
        }
        let web = t.get("web").expect("web");
        assert_eq!(web.state, "restarting");
        assert_eq!(
            web.message.as_deref(),
            Some("fault; starting again in 200ms")
        );
        assert_eq!(web.pid, None);
        assert!(!web.up());
        t.apply(&event(
            "vm.started",
            "web",
            json!({"pid": 101, "restart": 1}),
        ));
        let web = t.get("web").expect("web");
        assert_eq!(
            web.document(),
            json!({"name": "web", "uuid": uuid::Uuid::from_u128(7).to_string(),
                   "template": "tiny", "state": "running", "pid": 101, "last_exit": "fault",
                   "started_at": "2023-11-14T22:13:20Z",
                   "restarts": 1, "message": null, "cpus": 2, "memory": 536_870_912})
        );
        assert!(web.up());
        assert_eq!(web.restarts_total, 1);
        assert_eq!(web.exits_total[meaning_index("fault")], 1);
        assert_eq!(web.started_at, Some(seq[0].time));

        // A stop: stopping (from the job), then the final state; a fresh start clears the
        // supervisor's figures but not the counters.
        t.apply(&event(
            "job.started",
            "web",
            json!({"kind": "vm.stop", "state": "running"}),
        ));
        assert_eq!(t.get("web").map(|v| v.state.as_str()), Some("stopping"));
        t.apply(&event("vm.exited", "web", json!({"meaning": "poweroff"})));
        t.apply(&event(
            "vm.stopped",
            "web",
            json!({"state": "stopped", "message": null}),
        ));
        t.apply(&event("vm.started", "web", json!({"pid": 102})));
        let web = t.get("web").expect("web");
        assert_eq!((web.restarts, web.last_exit.as_deref()), (0, None));
        assert_eq!(web.exits_total, [1, 0, 0, 1, 0]);
        // Unknown meanings are bounded to `unknown`.
        t.apply(&event(
            "vm.exited",
            "web",
            json!({"meaning": "something new"}),
        ));
        t.apply(&event(
            "vm.crashed",
            "web",
            json!({"reason": "crash loop: 3 failed runs"}),
        ));
        let web = t.get("web").expect("web");
        assert_eq!(web.exits_total[meaning_index("unknown")], 1);
        assert_eq!((web.state.as_str(), web.crashes_total), ("crashed", 1));
        assert_eq!(web.message.as_deref(), Some("crash loop: 3 failed runs"));
        // Other events change nothing.
        assert_eq!(t.apply(&event("vm.stale", "web", json!({}))), None);
        assert_eq!(
            t.apply(&event("job.started", "x", json!({"kind": "vm.stop"}))),
            None
        );
        assert_eq!(
            t.apply(&event("dataset.created", "tank/x", json!({}))),
            None
        );
    }

    #[test]
    fn a_list_older_than_the_events_does_not_undo_them() {
        let mut t = VmTable::default();
        t.begin_resync();
        t.finish_resync(Some(vec![listed("a", "stopped"), listed("b", "running")]));
        // A refresh starts; meanwhile a starts, b is destroyed, c is created.
        t.begin_resync();
        t.apply(&event("vm.started", "a", json!({"pid": 5})));
        t.apply(&event("vm.destroyed", "b", json!({})));
        t.apply(&event(
            "vm.created",
            "c",
            json!({"uuid": "u-c", "template": "dev"}),
        ));
        t.finish_resync(Some(vec![listed("a", "stopped"), listed("b", "running")]));
        let names: Vec<&str> = t.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(t.get("a").map(|v| v.state.as_str()), Some("running"));
        let c = t.get("c").expect("c");
        assert_eq!((c.template.as_str(), c.cpus), ("dev", None));

        // The next list has c's figures; a VM gone from ZFS (destroyed by hand) goes.
        t.begin_resync();
        t.finish_resync(Some(vec![listed("c", "stopped")]));
        assert_eq!(t.iter().count(), 1);
        assert_eq!(t.get("c").and_then(|v| v.cpus), Some(2));
        // A broken vm.toml wins over events; an unreadable list changes nothing.
        t.begin_resync();
        t.finish_resync(Some(vec![listed("c", "broken")]));
        assert_eq!(
            t.get("c").map(|v| (v.state.as_str(), v.cpus)),
            Some(("broken", None))
        );
        t.begin_resync();
        t.finish_resync(None);
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn after_a_lag_the_list_decides() {
        let mut t = VmTable::default();
        t.apply(&event("vm.started", "a", json!({"pid": 5})));
        t.apply(&event(
            "vm.restarting",
            "a",
            json!({"meaning": "fault", "delay_ms": 1, "attempt": 1}),
        ));
        t.begin_resync();
        t.finish_resync(Some(vec![listed("a", "stopped")]));
        assert_eq!(t.get("a").map(|v| v.state.as_str()), Some("restarting"));
        t.forget_events();
        t.begin_resync();
        t.finish_resync(Some(vec![listed("a", "stopped")]));
        let a = t.get("a").expect("a");
        assert_eq!(a.state, "stopped");
        // Counters survive the resync.
        assert_eq!(a.restarts_total, 1);
    }
}
