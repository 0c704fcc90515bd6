//! Which core each shard thread is pinned to: the choice itself ([`assign`], a pure
//! function of the machine's topology, the cores other buses hold, the shard count and
//! the user's set), what the machine says ([`Topology::read`]), and the process-wide
//! registry of cores held by live buses ([`place`], [`Lease`]).

use std::collections::BTreeMap;

use crate::sync::plain::Mutex;

/// The largest CPU number read from the system; anything above is treated as unreadable
/// (Linux's `NR_CPUS` is at most 8,192).
const MAX_CPU: usize = 1 << 16;

/// What the machine says about its CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    /// The CPUs this process may run on (its affinity mask), ascending, no duplicates.
    /// Empty when it cannot be read.
    pub(crate) allowed: Vec<usize>,
    /// For a CPU, the CPUs that share its physical core (SMT siblings; the CPU itself may
    /// be listed). A CPU missing here has no known siblings.
    pub(crate) siblings: BTreeMap<usize, Vec<usize>>,
}

/// Why a user's core set ([`Builder::cores`](crate::Builder::cores)) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CoreError {
    /// The core is not in the process's affinity mask (`allowed`).
    NotAllowed { core: usize, allowed: Vec<usize> },
    /// The core is listed twice.
    Duplicate { core: usize },
}

/// The core of each shard (`None`: not pinned).
///
/// With a user set: shard `i` gets its `i`-th core; shards beyond the set are not pinned.
/// Each core must be in `topo.allowed` (unless that is unknown, empty) and listed once.
///
/// Without one, each shard gets a core of its own, in ascending order of CPU number,
/// that no other live bus holds (`in_use`): first cores none of whose SMT siblings is
/// held (by another bus or by an earlier shard of this one), then the siblings of held
/// cores; shards beyond that are not pinned, so two shards never share a CPU. An unknown
/// mask pins nothing.
pub(crate) fn assign(
    topo: &Topology,
    in_use: &[usize],
    shards: usize,
    user: Option<&[usize]>,
) -> Result<Vec<Option<usize>>, CoreError> {
    let mut plan = vec![None; shards];
    if let Some(user) = user {
        for (i, &core) in user.iter().enumerate() {
            if user[..i].contains(&core) {
                return Err(CoreError::Duplicate { core });
            }
            if !topo.allowed.is_empty() && topo.allowed.binary_search(&core).is_err() {
                return Err(CoreError::NotAllowed {
                    core,
                    allowed: topo.allowed.clone(),
                });
            }
        }
        for (slot, &core) in plan.iter_mut().zip(user) {
            *slot = Some(core);
        }
        return Ok(plan);
    }
    let mut held: Vec<usize> = in_use.to_vec();
    let mut chosen = 0;
    let sibling_held = |core: usize, held: &[usize]| {
        topo.siblings
            .get(&core)
            .is_some_and(|sibs| sibs.iter().any(|s| *s != core && held.contains(s)))
    };
    for whole_core_only in [true, false] {
        for &core in &topo.allowed {
            if chosen == shards {
                return Ok(plan);
            }
            if held.contains(&core) || (whole_core_only && sibling_held(core, &held)) {
                continue;
            }
            plan[chosen] = Some(core);
            held.push(core);
            chosen += 1;
        }
    }
    Ok(plan)
}

/// Parses a Linux CPU list (`"0-3,8,10-11"`, as in `Cpus_allowed_list` and
/// `thread_siblings_list`) into ascending CPU numbers without duplicates. `None` for
/// anything else: an empty part, a reversed range, a number over [`MAX_CPU`].
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let one: usize = part.trim().parse().ok()?;
                (one, one)
            }
        };
        if lo > hi || hi > MAX_CPU {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

impl Topology {
    /// This machine's, now: the affinity mask of the process and the SMT siblings of each
    /// CPU in it. Whatever cannot be read is left empty (see the fields).
    pub(crate) fn read() -> Self {
        let allowed = process_mask();
        let siblings = allowed
            .iter()
            .filter_map(|&cpu| siblings_of(cpu).map(|s| (cpu, s)))
            .collect();
        Self { allowed, siblings }
    }
}

/// The process's affinity mask. On Linux that of its main thread (`Cpus_allowed_list` in
/// `/proc/self/status`, as `taskset -p` shows it), so that it does not depend on the
/// thread that builds the bus; elsewhere, or if that cannot be read, the calling thread's.
#[cfg(not(shardbus_loom))]
fn process_mask() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    if let Some(mask) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(parse_cpu_list)
        })
    {
        return mask;
    }
    let mut mask: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    mask.sort_unstable();
    mask.dedup();
    mask
}

/// loom threads are not OS threads to pin.
#[cfg(shardbus_loom)]
fn process_mask() -> Vec<usize> {
    Vec::new()
}

/// The SMT siblings of `cpu` (Linux: `thread_siblings_list` in sysfs).
fn siblings_of(cpu: usize) -> Option<Vec<usize>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    parse_cpu_list(&std::fs::read_to_string(path).ok()?)
}

/// Cores held by the pinned shard threads of live buses, one entry per thread (a core
/// may be listed more than once when users chose overlapping sets).
static IN_USE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// One shard thread's hold on its core in the registry; released when dropped (the
/// thread ends, or `build()` failed before starting it).
#[derive(Debug)]
pub(crate) struct Lease(Option<usize>);

impl Lease {
    /// No core (pinning off).
    pub(crate) fn none() -> Self {
        Lease(None)
    }

    /// The core to pin to, if any.
    pub(crate) fn core(&self) -> Option<usize> {
        self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(core) = self.0 {
            let mut in_use = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = in_use.iter().position(|c| *c == core) {
                in_use.swap_remove(i);
            }
        }
    }
}

/// Chooses the cores of a new bus's `shards` threads ([`assign`] on this machine's
/// [`Topology`] and the cores live buses hold) and holds them until the leases drop.
pub(crate) fn place(shards: usize, user: Option<&[usize]>) -> Result<Vec<Lease>, CoreError> {
    let topo = Topology::read();
    if topo.allowed.is_empty() && user.is_none() && !cfg!(shardbus_loom) {
        tracing::warn!("cannot read the CPU affinity mask; shard threads run unpinned");
    }
    let mut in_use = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let plan = assign(&topo, &in_use, shards, user)?;
    in_use.extend(plan.iter().flatten());
    Ok(plan.into_iter().map(Lease).collect())
}

/// What [`place`] would choose now for `shards` shards if the cores in `in_use` were held
/// (and no others), on this machine: for tests that check a bus's threads against it.
#[doc(hidden)]
pub fn __plan_cores(in_use: &[usize], shards: usize) -> Vec<Option<usize>> {
    assign(&Topology::read(), in_use, shards, None).unwrap_or_default()
}

/// The cores held by live buses now, ascending: for tests.
#[doc(hidden)]
pub fn __cores_in_use() -> Vec<usize> {
    let mut in_use = IN_USE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    in_use.sort_unstable();
    in_use
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(allowed: &[usize], pairs: &[&[usize]]) -> Topology {
        let mut siblings = BTreeMap::new();
        for group in pairs {
            for &cpu in *group {
                siblings.insert(cpu, group.to_vec());
            }
        }
        Topology {
            allowed: allowed.to_vec(),
            siblings,
        }
    }

    fn plan(t: &Topology, in_use: &[usize], shards: usize) -> Vec<Option<usize>> {
        assign(t, in_use, shards, None).unwrap()
    }

    #[test]
    fn two_cores_no_smt() {
        let t = topo(&[0, 1], &[]);
        assert_eq!(plan(&t, &[], 2), [Some(0), Some(1)]);
        // A second bus finds both held: unpinned, not piled onto core 0.
        assert_eq!(plan(&t, &[0, 1], 2), [None, None]);
        assert_eq!(plan(&t, &[0], 2), [Some(1), None]);
        // More shards than cores: the rest unpinned, never two on one core.
        assert_eq!(plan(&t, &[], 4), [Some(0), Some(1), None, None]);
    }

    #[test]
    fn smt_pairs_numbered_apart() {
        // Intel-style numbering: 0/4, 1/5, 2/6, 3/7 share a core.
        let t = topo(
            &[0, 1, 2, 3, 4, 5, 6, 7],
            &[&[0, 4], &[1, 5], &[2, 6], &[3, 7]],
        );
        assert_eq!(plan(&t, &[], 4), [Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(
            plan(&t, &[], 6),
            [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)]
        );
        // Another bus holds 0 and 1: whole cores 2 and 3 first, then siblings.
        assert_eq!(plan(&t, &[0, 1], 3), [Some(2), Some(3), Some(4)]);
    }

    #[test]
    fn smt_pairs_numbered_together() {
        // AMD-style numbering: 0/1, 2/3, 4/5 share a core.
        let t = topo(&[0, 1, 2, 3, 4, 5], &[&[0, 1], &[2, 3], &[4, 5]]);
        assert_eq!(plan(&t, &[], 2), [Some(0), Some(2)]);
        assert_eq!(plan(&t, &[], 4), [Some(0), Some(2), Some(4), Some(1)]);
        // A second bus of 2 after the first: the last whole core, then a sibling.
        assert_eq!(plan(&t, &[0, 2], 2), [Some(4), Some(1)]);
        assert_eq!(plan(&t, &[0, 2, 4, 1], 3), [Some(3), Some(5), None]);
    }

    #[test]
    fn restricted_mask_and_unknown_siblings() {
        // A mask of 2, 3, 6 (taskset); 6 has no sibling information.
        let t = topo(&[2, 3, 6], &[&[2, 3]]);
        assert_eq!(plan(&t, &[], 2), [Some(2), Some(6)]);
        assert_eq!(plan(&t, &[], 3), [Some(2), Some(6), Some(3)]);
        // A core held outside the mask (a user's set) changes nothing here.
        assert_eq!(plan(&t, &[0], 1), [Some(2)]);
    }

    #[test]
    fn unknown_mask_pins_nothing() {
        let t = Topology::default();
        assert_eq!(plan(&t, &[], 3), [None, None, None]);
        // A user's set is taken as given when the mask is unknown.
        assert_eq!(
            assign(&t, &[], 2, Some(&[5, 9])).unwrap(),
            [Some(5), Some(9)]
        );
    }

    #[test]
    fn user_set() {
        let t = topo(&[0, 1, 2, 3], &[&[0, 1], &[2, 3]]);
        // In the user's order, regardless of siblings and of other buses.
        assert_eq!(
            assign(&t, &[3], 3, Some(&[3, 1, 2])).unwrap(),
            [Some(3), Some(1), Some(2)]
        );
        // Fewer cores than shards: the rest unpinned. More: the extra cores unused.
        assert_eq!(
            assign(&t, &[], 3, Some(&[2])).unwrap(),
            [Some(2), None, None]
        );
        assert_eq!(assign(&t, &[], 1, Some(&[2, 3])).unwrap(), [Some(2)]);
        // An empty set pins nothing.
        assert_eq!(assign(&t, &[], 2, Some(&[])).unwrap(), [None, None]);
        assert_eq!(
            assign(&t, &[], 2, Some(&[1, 7])),
            Err(CoreError::NotAllowed {
                core: 7,
                allowed: vec![0, 1, 2, 3]
            })
        );
        assert_eq!(
            assign(&t, &[], 2, Some(&[1, 2, 1])),
            Err(CoreError::Duplicate { core: 1 })
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,4"), Some(vec![0, 4]));
        assert_eq!(parse_cpu_list("8-9,0-1,1"), Some(vec![0, 1, 8, 9]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        for bad in [
            "",
            "\n",
            "a",
            "1-",
            "-1",
            "3-1",
            "1,,2",
            "0-4294967295",
            "1 2",
        ] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }
}
