//! `ls -l`-style listings of an image's tree.

use std::fmt::Write;

use crate::reader::{Image, NodeData, NodeId, ReaderError, Walk};

fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, special: u32, set_x: char, set_nox: char| match (
        mode & x != 0,
        mode & special != 0,
    ) {
        (true, true) => set_x,
        (false, true) => set_nox,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// Civil date from days since the epoch (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn time_string(sec: i64) -> String {
    let (y, m, d) = civil(sec.div_euclid(86_400));
    let t = sec.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", t / 3600, t / 60 % 60)
}

fn line(image: &Image, id: NodeId, path: &[u8], out: &mut String) {
    let n = image.table().node(id);
    let size = match n.data {
        NodeData::Other(rdev) if rdev != 0 => {
            format!("{},{}", libc::major(rdev), libc::minor(rdev))
        }
        _ => n.size.to_string(),
    };
    let _ = write!(
        out,
        "{} {:>3} {:>5} {:>5} {:>10} {} {}",
        mode_string(n.mode),
        n.nlink,
        n.uid,
        n.gid,
        size,
        time_string(n.mtime_sec),
        String::from_utf8_lossy(path)
    );
    if let Some(t) = image.table().symlink_target(n) {
        let _ = write!(out, " -> {}", String::from_utf8_lossy(t));
    }
    out.push('\n');
}

/// Lists `path` (a directory's entries, or the file itself); with `recursive`, the subtree.
pub fn list(image: &Image, path: &str, recursive: bool) -> Result<String, ReaderError> {
    let table = image.table();
    let id = table.resolve(path.as_bytes(), true)?;
    let base = path.trim_matches('/').as_bytes().to_vec();
    let mut out = String::new();
    if !matches!(table.node(id).data, NodeData::Dir { .. }) {
        line(image, id, path.as_bytes(), &mut out);
        return Ok(out);
    }
    if recursive {
        for item in Walk::new(table, id, base) {
            let mut shown = b"/".to_vec();
            shown.extend_from_slice(&item.path);
            line(image, item.node, &shown, &mut out);
        }
    } else {
        for e in table.entries(id) {
            line(image, e.node, table.name(e), &mut out);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_modes_and_dates() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
        assert_eq!(time_string(0), "1970-01-01 00:00");
        assert_eq!(time_string(951_782_400), "2000-02-29 00:00");
        assert_eq!(time_string(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(time_string(-1), "1969-12-31 23:59");
    }
}
