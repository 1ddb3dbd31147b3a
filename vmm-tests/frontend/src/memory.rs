//! Guest RAM as a VMM has it: one memfd-backed region, shared with the back end by fd, with
//! a bump allocator for rings and request buffers.

use std::fs::File;
use std::os::unix::io::{AsRawFd, FromRawFd};

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use crate::error::{FrontendError, Result};

/// Guest-physical address of the first byte of RAM. Not zero, so that address 0 (and
/// everything below it) lies outside guest memory, as it would in a hole of a real VM.
pub const RAM_BASE: u64 = 0x10_0000;

/// The guest's RAM and where the next allocation goes.
pub struct GuestRam {
    mem: GuestMemoryMmap<()>,
    file: File,
    size: u64,
    host_base: u64,
    next: u64,
}

impl GuestRam {
    /// Creates `size` bytes of shared guest RAM (rounded up to whole pages).
    pub fn new(size: u64) -> Result<GuestRam> {
        let size = size.div_ceil(4096) * 4096;
        let name = c"virtiofs-frontend-ram";
        // SAFETY: `name` is a NUL-terminated string that outlives the call; the flags are
        // valid memfd_create flags. The returned descriptor is checked below.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(FrontendError::io(
                "memfd_create",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just created by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)
            .map_err(|e| FrontendError::io("size guest RAM", e))?;
        let shared = file
            .try_clone()
            .map_err(|e| FrontendError::io("dup guest RAM fd", e))?;
        let len = usize::try_from(size).map_err(|_| FrontendError::Usage("RAM too big".into()))?;
        let mapping = MmapRegion::<()>::from_file(FileOffset::new(shared, 0), len)
            .map_err(|e| FrontendError::Memory(format!("map guest RAM: {e}")))?;
        let host_base = mapping.as_ptr() as u64;
        let region = GuestRegionMmap::new(mapping, GuestAddress(RAM_BASE))
            .ok_or_else(|| FrontendError::Memory("guest RAM region overflows".into()))?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| FrontendError::Memory(format!("guest RAM: {e}")))?;
        Ok(GuestRam {
            mem,
            file,
            size,
            host_base,
            next: RAM_BASE,
        })
    }

    /// The memory, for reads and writes by guest-physical address.
    pub fn mem(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    /// One past the last guest-physical address of RAM.
    pub fn end(&self) -> u64 {
        RAM_BASE + self.size
    }

    /// Reserves `len` bytes aligned to `align` (a power of two) and zeroes them.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<GuestAddress> {
        let start = self.next.next_multiple_of(align);
        let end = start
            .checked_add(len)
            .filter(|end| *end <= self.end())
            .ok_or_else(|| {
                FrontendError::Usage(format!(
                    "guest RAM of {} MiB too small (need {len} more bytes)",
                    self.size >> 20
                ))
            })?;
        self.next = end;
        let addr = GuestAddress(start);
        self.mem
            .write_slice(&vec![0u8; len as usize], addr)
            .map_err(|e| FrontendError::Memory(e.to_string()))?;
        Ok(addr)
    }

    /// Where `addr` is mapped in this process: what SET_VRING_ADDR carries.
    pub fn host_addr(&self, addr: GuestAddress) -> u64 {
        self.host_base + (addr.raw_value() - RAM_BASE)
    }

    /// The region as SET_MEM_TABLE / ADD_MEM_REG describe it.
    pub fn region_info(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: RAM_BASE,
            memory_size: self.size,
            userspace_addr: self.host_base,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }
}
