//! The table's own directories: the paths that lead to mount points (`/rafs/c1` for a mount at
//! `/rafs/c1/lowerdir`). Each has an inode number of slot 0, given in creation order and
//! never reused. Directories stay when the mounts below them go (a guest may still hold
//! them, and Kata mounts again below the same parents); a mount point itself is an entry of
//! its parent that leads into the mounted file system.

use std::collections::{BTreeMap, HashMap};

use super::path::Mountpoint;
use super::MountError;

/// The root directory's inode number (FUSE's root).
pub const ROOT: u64 = 1;

/// What a name in one of the table's directories leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// Another of the table's directories.
    Dir(u64),
    /// The root of the file system mounted in this slot.
    Mount(u8),
}

#[derive(Debug)]
struct Dir {
    parent: u64,
    children: BTreeMap<Vec<u8>, Child>,
}

/// The directory tree of the table (slot 0).
#[derive(Debug)]
pub struct PseudoTree {
    dirs: HashMap<u64, Dir>,
    next: u64,
}

impl Default for PseudoTree {
    fn default() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(
            ROOT,
            Dir {
                parent: ROOT,
                children: BTreeMap::new(),
            },
        );
        PseudoTree {
            dirs,
            next: ROOT + 1,
        }
    }
}

impl PseudoTree {
    /// The number the next directory will get.
    pub fn next_ino(&self) -> u64 {
        self.next
    }

    /// Whether `ino` is one of the table's directories.
    pub fn is_dir(&self, ino: u64) -> bool {
        self.dirs.contains_key(&ino)
    }

    /// The parent of directory `ino` (the root is its own parent).
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.dirs.get(&ino).map(|d| d.parent)
    }

    /// What `name` in directory `ino` leads to.
    pub fn lookup(&self, ino: u64, name: &[u8]) -> Option<Child> {
        self.dirs.get(&ino)?.children.get(name).copied()
    }

    /// The entries of directory `ino`, sorted by name.
    pub fn entries(&self, ino: u64) -> Option<Vec<(Vec<u8>, Child)>> {
        let dir = self.dirs.get(&ino)?;
        Some(dir.children.iter().map(|(n, c)| (n.clone(), *c)).collect())
    }

    /// Subdirectories and mount points in directory `ino` (for its link count).
    pub fn subdirs(&self, ino: u64) -> usize {
        self.dirs.get(&ino).map_or(0, |d| d.children.len())
    }

    /// The directory of the parent of `at` and the mount point's last name, if `at` could be
    /// mounted on (see [`PseudoTree::attach`]); changes nothing.
    pub fn check_attach(&self, at: &Mountpoint) -> Result<(), MountError> {
        let (parents, _) = self.walk(at)?;
        let Some(parent) = parents else {
            return Ok(());
        };
        let last = at.names().last().expect("a mount point has a name");
        match self.lookup(parent, last) {
            None => Ok(()),
            Some(Child::Mount(_)) => Err(MountError::AlreadyMounted(at.display())),
            Some(Child::Dir(d)) if self.subdirs(d) == 0 => Ok(()),
            Some(Child::Dir(_)) => Err(MountError::MountsBelow(at.display())),
        }
    }

    /// Walks the parents of `at`'s last name: the deepest existing directory holding the
    /// last name (None if some parent is still missing), and the number of parent names
    /// found. Fails if a parent is a mount point.
    fn walk(&self, at: &Mountpoint) -> Result<(Option<u64>, usize), MountError> {
        let names = at.names();
        let mut dir = ROOT;
        for (i, name) in names[..names.len() - 1].iter().enumerate() {
            match self.lookup(dir, name) {
                None => return Ok((None, i)),
                Some(Child::Dir(d)) => dir = d,
                Some(Child::Mount(_)) => {
                    return Err(MountError::Nested {
                        path: at.display(),
                        mount: at.prefix(i + 1).display(),
                    });
                }
            }
        }
        Ok((Some(dir), names.len() - 1))
    }

    /// Makes `at` lead to `slot`, creating the directories above it. An empty directory of
    /// the table at `at` is replaced (its inode number is retired); anything else there is an
    /// error, and then nothing changes.
    pub fn attach(&mut self, at: &Mountpoint, slot: u8) -> Result<(), MountError> {
        self.check_attach(at)?;
        let names = at.names();
        let mut dir = ROOT;
        for name in &names[..names.len() - 1] {
            dir = match self.lookup(dir, name) {
                Some(Child::Dir(d)) => d,
                _ => self.mkdir(dir, name),
            };
        }
        let last = names.last().expect("a mount point has a name").clone();
        let parent = self
            .dirs
            .get_mut(&dir)
            .expect("walked to an existing directory");
        if let Some(Child::Dir(old)) = parent.children.insert(last, Child::Mount(slot)) {
            self.dirs.remove(&old);
        }
        Ok(())
    }

    /// Removes the mount point `at` and returns the slot it led to.
    pub fn detach(&mut self, at: &Mountpoint) -> Result<u8, MountError> {
        let not_mounted = || MountError::NotMounted(at.display());
        let (Some(parent), _) = self.walk(at).map_err(|_| not_mounted())? else {
            return Err(not_mounted());
        };
        let last = at.names().last().expect("a mount point has a name");
        let dir = self
            .dirs
            .get_mut(&parent)
            .expect("walked to an existing directory");
        match dir.children.get(last) {
            Some(Child::Mount(slot)) => {
                let slot = *slot;
                dir.children.remove(last);
                Ok(slot)
            }
            _ => Err(not_mounted()),
        }
    }

    fn mkdir(&mut self, parent: u64, name: &[u8]) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.dirs.insert(
            ino,
            Dir {
                parent,
                children: BTreeMap::new(),
            },
        );
        self.dirs
            .get_mut(&parent)
            .expect("parent exists")
            .children
            .insert(name.to_vec(), Child::Dir(ino));
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(s: &str) -> Mountpoint {
        Mountpoint::parse(s).unwrap()
    }

    #[test]
    fn builds_parents_and_keeps_them_after_unmount() {
        let mut t = PseudoTree::default();
        t.attach(&mp("/containers"), 1).unwrap();
        t.attach(&mp("/rafs/c1/lowerdir"), 2).unwrap();
        t.attach(&mp("/rafs/c2/lowerdir"), 3).unwrap();
        assert_eq!(t.lookup(ROOT, b"containers"), Some(Child::Mount(1)));
        let Some(Child::Dir(rafs)) = t.lookup(ROOT, b"rafs") else {
            panic!("no /rafs")
        };
        let Some(Child::Dir(c1)) = t.lookup(rafs, b"c1") else {
            panic!("no /rafs/c1")
        };
        assert_eq!(t.parent(c1), Some(rafs));
        assert_eq!(t.parent(rafs), Some(ROOT));
        assert_eq!(t.lookup(c1, b"lowerdir"), Some(Child::Mount(2)));
        let names: Vec<Vec<u8>> = t.entries(rafs).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, [b"c1".to_vec(), b"c2".to_vec()]);

        assert_eq!(t.detach(&mp("/rafs/c1/lowerdir")).unwrap(), 2);
        assert_eq!(t.lookup(c1, b"lowerdir"), None);
        assert!(t.is_dir(c1), "parents stay");
        // Mounting again below the same parent reuses it.
        t.attach(&mp("/rafs/c1/lowerdir"), 4).unwrap();
        assert_eq!(t.lookup(c1, b"lowerdir"), Some(Child::Mount(4)));
    }

    #[test]
    fn refuses_conflicts_and_changes_nothing() {
        let mut t = PseudoTree::default();
        t.attach(&mp("/a/b"), 1).unwrap();
        let before = format!("{:?}", t.entries(ROOT));
        assert!(matches!(
            t.attach(&mp("/a/b"), 2),
            Err(MountError::AlreadyMounted(_))
        ));
        assert!(matches!(
            t.attach(&mp("/a/b/c"), 2),
            Err(MountError::Nested { .. })
        ));
        assert!(matches!(
            t.attach(&mp("/a"), 2),
            Err(MountError::MountsBelow(_))
        ));
        assert!(matches!(
            t.detach(&mp("/a")),
            Err(MountError::NotMounted(_))
        ));
        assert!(matches!(
            t.detach(&mp("/x/y")),
            Err(MountError::NotMounted(_))
        ));
        assert!(matches!(
            t.detach(&mp("/a/b/c")),
            Err(MountError::NotMounted(_))
        ));
        assert_eq!(format!("{:?}", t.entries(ROOT)), before);
    }

    #[test]
    fn an_empty_directory_can_become_a_mount_point() {
        let mut t = PseudoTree::default();
        t.attach(&mp("/a/b"), 1).unwrap();
        t.detach(&mp("/a/b")).unwrap();
        let Some(Child::Dir(a)) = t.lookup(ROOT, b"a") else {
            panic!()
        };
        t.attach(&mp("/a"), 2).unwrap();
        assert_eq!(t.lookup(ROOT, b"a"), Some(Child::Mount(2)));
        assert!(!t.is_dir(a), "the directory's inode is retired");
    }
}
