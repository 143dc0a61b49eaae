//! The EAL: initialised once per process, cleaned up when the [`Eal`] is
//! dropped — and it cannot be dropped while anything made from it lives,
//! because pools, ports and the lcore scope borrow it.
//!
//! Workers run on EAL lcores (`--lcores`), launched with
//! `rte_eal_remote_launch` inside [`Eal::scope`], which waits for every
//! launched lcore before it returns (as `std::thread::scope` does for
//! threads). That keeps each worker's lcore id and mempool cache, and keeps
//! the multi-process channel on (`rte_thread_register` on a plain thread
//! would turn it off, and with it `dpdk-dumpcap` and secondary processes).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dpdk_sys as sys;

use crate::error::{errno, last_errno, strerror, DpdkError};

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised DPDK environment. One per process; `rte_eal_cleanup` on
/// drop. Not `Send`: it is dropped on the main lcore, where it was made.
pub struct Eal {
    _main_thread: PhantomData<*const ()>,
    pdump: std::cell::Cell<bool>,
}

impl Eal {
    /// Initialise EAL with `args` (without the program name).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInit);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("espgw").expect("static"));
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError::BadArg(a.to_string()))?);
        }
        // EAL may keep pointers into argv (it saves them for telemetry) and may
        // permute the array, so both live for the rest of the process.
        let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut std::os::raw::c_char] =
            Box::leak(owned.iter().map(|c| c.as_ptr() as *mut _).collect::<Vec<_>>().into_boxed_slice());
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the process.
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            let e = last_errno();
            let hint = match e {
                errno::ENODEV => {
                    " — a device in [[port]].device or the EAL args is unknown or failed to probe (see the EAL \
                     lines above; a PCI NIC must be bound to vfio-pci: dpdk-devbind.py --status)"
                }
                errno::ENOMEM | errno::ENOSPC => {
                    " — not enough memory: without hugepages use --no-huge -m 512; with them, reserve more \
                     (echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)"
                }
                errno::EEXIST | errno::EBUSY | errno::EAGAIN => " — another DPDK process uses the same --file-prefix",
                _ => "",
            };
            return Err(DpdkError::EalInit(format!("{}{hint}", strerror(e))));
        }
        Ok(Eal { _main_thread: PhantomData, pdump: std::cell::Cell::new(false) })
    }

    /// Let `dpdk-dumpcap` (and `dpdk-pdump`) capture this process's ports:
    /// they attach as secondary processes over the multi-process channel,
    /// so EAL must run with a `--file-prefix` (not `--in-memory`) and shared
    /// memory (hugepages; a `--no-huge` primary cannot be attached to).
    pub fn enable_pdump(&self) -> Result<(), DpdkError> {
        // SAFETY: EAL is initialised; called once from the main thread.
        if unsafe { sys::rte_pdump_init() } < 0 {
            return Err(DpdkError::Pdump(format!(
                "{} (the multi-process channel is off: --in-memory or --no-shconf)",
                strerror(last_errno())
            )));
        }
        self.pdump.set(true);
        Ok(())
    }

    /// Number of ethdev ports EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised (we hold an Eal).
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_socket_id() as i32 }
    }

    /// The main lcore (this thread's).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// The enabled lcores other than the main one, in id order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let main = self.main_lcore();
        (0..sys::RTE_MAX_LCORE)
            // SAFETY: EAL is initialised; any id below RTE_MAX_LCORE may be asked.
            .filter(|&l| l != main && unsafe { sys::rte_lcore_is_enabled(l) } != 0)
            .collect()
    }

    /// The CPU an lcore runs on.
    pub fn lcore_cpu(&self, lcore: u32) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_lcore_to_cpu_id(lcore as i32) as u32 }
    }

    /// Run `f` with a scope in which work is launched on worker lcores. Every
    /// lcore launched in it has finished when `scope` returns, also when `f`
    /// panics, so the work may borrow anything that outlives the call.
    pub fn scope<'env, R>(&'env self, f: impl for<'scope> FnOnce(&'scope LcoreScope<'scope, 'env>) -> R) -> R {
        let scope = LcoreScope { launched: RefCell::new(Vec::new()), _scope: PhantomData, _env: PhantomData };
        struct WaitAll<'a>(&'a RefCell<Vec<u32>>);
        impl Drop for WaitAll<'_> {
            fn drop(&mut self) {
                for &l in self.0.borrow().iter() {
                    // SAFETY: l was launched in this scope; waiting on a finished lcore returns at once.
                    unsafe { sys::rte_eal_wait_lcore(l) };
                }
            }
        }
        let _wait = WaitAll(&scope.launched);
        f(&scope)
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        if self.pdump.get() {
            // SAFETY: pdump was initialised by enable_pdump on this EAL.
            unsafe { sys::rte_pdump_uninit() };
        }
        // SAFETY: everything made from this EAL borrows it, so it is all gone;
        // launched lcores were waited for by their scope.
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// Where work is launched on lcores; see [`Eal::scope`].
pub struct LcoreScope<'scope, 'env: 'scope> {
    launched: RefCell<Vec<u32>>,
    // Invariant lifetimes, as std::thread::Scope has them.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

type Outcome<T> = Arc<Mutex<Option<std::thread::Result<T>>>>;

/// Work running on an lcore; join it for its result.
pub struct LcoreHandle<'scope, T> {
    lcore: u32,
    outcome: Outcome<T>,
    _scope: PhantomData<&'scope ()>,
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box made in `spawn`, handed over exactly once.
    let job = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
    job();
    0
}

impl<'scope> LcoreScope<'scope, '_> {
    /// Run `f` on worker lcore `lcore` (from [`Eal::worker_lcores`]).
    pub fn spawn<T, F>(&'scope self, lcore: u32, f: F) -> Result<LcoreHandle<'scope, T>, DpdkError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let outcome: Outcome<T> = Arc::new(Mutex::new(None));
        let out = outcome.clone();
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(f));
            *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        });
        // SAFETY: the job only borrows data that lives for 'scope, and the
        // scope waits for this lcore (WaitAll) before 'scope ends, so erasing
        // the lifetime for the C call never lets it run past its borrows.
        let job: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(job) };
        let arg = Box::into_raw(Box::new(job));
        // SAFETY: trampoline has the lcore_function_t signature and takes ownership of arg.
        let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg as *mut c_void, lcore) };
        if rc != 0 {
            // SAFETY: not launched, so arg is still ours to free.
            drop(unsafe { Box::from_raw(arg) });
            return Err(DpdkError::Launch { lcore, reason: strerror(rc) });
        }
        self.launched.borrow_mut().push(lcore);
        Ok(LcoreHandle { lcore, outcome, _scope: PhantomData })
    }
}

impl<T> LcoreHandle<'_, T> {
    /// The lcore it runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Wait for the work to finish; a panic comes back as an error.
    pub fn join(self) -> Result<T, DpdkError> {
        // SAFETY: the lcore was launched by this handle's scope.
        unsafe { sys::rte_eal_wait_lcore(self.lcore) };
        let r = self.outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
        match r {
            Some(Ok(v)) => Ok(v),
            Some(Err(p)) => Err(DpdkError::WorkerPanicked { lcore: self.lcore, message: panic_message(&*p) }),
            None => Err(DpdkError::WorkerPanicked { lcore: self.lcore, message: "no result".into() }),
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}
