//! intel-ipsec-mb (the library under DPDK's `crypto_aesni_mb` PMD), called
//! directly through the C shim in `dpdk-sys`: multi-buffer AES-CBC +
//! HMAC-SHA1-96, AES-GCM and ChaCha20-Poly1305 on bursts of ESP packets. It implements the
//! core's [`EspTransform`]; [`register`] makes it the `ipsec-mb` backend (and
//! the `auto` choice where it runs).
//!
//! Why: one packet at a time, CBC encryption and SHA-1 are serial chains that
//! leave the SIMD units idle; the multi-buffer manager interleaves up to 8-16
//! packets' chains (measured in perf/RESULTS.md). A manager is per thread
//! (`thread_local`, made on a thread's first burst); a key context ([`MbKeys`])
//! is per SA, immutable and shared by every worker.

use std::cell::RefCell;
use std::ptr::NonNull;

use aes::cipher::KeyInit;
use dpdk_sys as sys;
use espgw_core::crypto::{builtin::cbc_iv, Algorithm, CryptoError, EspTransform, ExternalBackend};
use zeroize::Zeroizing;

/// The algorithms the backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbAlgorithm {
    Cbc128Sha1,
    Cbc256Sha1,
    Gcm128,
    Gcm256,
    Chacha20Poly1305,
}

impl MbAlgorithm {
    fn code(self) -> i32 {
        (match self {
            MbAlgorithm::Cbc128Sha1 => sys::ESPGW_IMB_CBC128_SHA1,
            MbAlgorithm::Cbc256Sha1 => sys::ESPGW_IMB_CBC256_SHA1,
            MbAlgorithm::Gcm128 => sys::ESPGW_IMB_GCM128,
            MbAlgorithm::Gcm256 => sys::ESPGW_IMB_GCM256,
            MbAlgorithm::Chacha20Poly1305 => sys::ESPGW_IMB_CHACHA20_POLY1305,
        }) as i32
    }
    /// GCM or ChaCha20-Poly1305: 8-byte IV, 16-byte ICV, no block alignment.
    fn is_aead(self) -> bool {
        matches!(self, MbAlgorithm::Gcm128 | MbAlgorithm::Gcm256 | MbAlgorithm::Chacha20Poly1305)
    }
    /// IV and ICV lengths on the wire.
    fn iv_icv(self) -> (usize, usize) {
        if self.is_aead() {
            (8, 16)
        } else {
            (16, 12)
        }
    }
}

/// Largest burst one call takes.
pub const MAX_BURST: usize = sys::ESPGW_IMB_MAX_BURST as usize;

/// A thread's multi-buffer manager.
struct Mgr(NonNull<std::ffi::c_void>);

impl Drop for Mgr {
    fn drop(&mut self) {
        // SAFETY: the pointer came from espgw_imb_mgr_new and is freed once, here.
        unsafe { sys::espgw_imb_mgr_free(self.0.as_ptr()) }
    }
}

thread_local! {
    static MGR: RefCell<Option<Mgr>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's manager (made on first use), or `None` when the
/// library cannot run on this CPU.
fn with_mgr<R>(f: impl FnOnce(Option<NonNull<std::ffi::c_void>>) -> R) -> R {
    MGR.with(|m| {
        let mut m = m.borrow_mut();
        if m.is_none() {
            // SAFETY: no arguments; returns an owned manager or NULL.
            *m = NonNull::new(unsafe { sys::espgw_imb_mgr_new() }).map(Mgr);
        }
        f(m.as_ref().map(|m| m.0))
    })
}

/// The code path intel-ipsec-mb picked on this CPU (`AVX512`, `AVX2`, ...), if it runs.
pub fn arch() -> Option<&'static str> {
    with_mgr(|m| {
        // SAFETY: a live manager; the function returns a static string.
        m.map(|m| unsafe { std::ffi::CStr::from_ptr(sys::espgw_imb_arch_name(m.as_ptr())) }.to_str().unwrap_or("?"))
    })
}

/// Per-SA key context: expanded AES keys and HMAC pads, or GCM hash keys and
/// salt. Zeroized when dropped (by the shim).
pub struct MbKeys {
    ptr: NonNull<std::ffi::c_void>,
    alg: MbAlgorithm,
}

// SAFETY: the context is written once in `new` and only read afterwards (by
// any number of threads at once), and freed once in Drop.
unsafe impl Send for MbKeys {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for MbKeys {}

impl Drop for MbKeys {
    fn drop(&mut self) {
        // SAFETY: the pointer came from espgw_imb_sa_new and is freed once, here.
        unsafe { sys::espgw_imb_sa_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for MbKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MbKeys({:?}, redacted)", self.alg)
    }
}

impl MbKeys {
    /// `key`: CBC 16/32 bytes (+ a 20-byte `auth_key`); GCM 16/32 bytes + 4-byte salt.
    /// `None` if the lengths are wrong or the library cannot run here.
    pub fn new(alg: MbAlgorithm, key: &[u8], auth_key: &[u8]) -> Option<MbKeys> {
        with_mgr(|m| {
            let m = m?;
            // SAFETY: a live manager; key and auth_key are valid for the lengths given.
            let p = unsafe {
                sys::espgw_imb_sa_new(
                    m.as_ptr(),
                    alg.code(),
                    key.as_ptr(),
                    key.len(),
                    auth_key.as_ptr(),
                    auth_key.len(),
                )
            };
            NonNull::new(p).map(|ptr| MbKeys { ptr, alg })
        })
    }

    pub fn algorithm(&self) -> MbAlgorithm {
        self.alg
    }

    /// Seal (`encrypt`) or open ESP packets in place, up to [`MAX_BURST`] per
    /// call (longer slices are done in chunks). Each buffer runs from the ESP
    /// header to the end of the ICV, IV and trailer in place. `seq_hi`: the
    /// ESN high halves, one per buffer, or `None`. `results[i]` says what
    /// happened to `bufs[i]` (written straight into the caller's slots: no
    /// status array mapped again layer by layer).
    pub fn burst(
        &self,
        encrypt: bool,
        bufs: &mut [&mut [u8]],
        seq_hi: Option<&[u32]>,
        results: &mut [Result<(), CryptoError>],
    ) {
        let n = bufs.len().min(results.len()).min(seq_hi.map_or(usize::MAX, |s| s.len()));
        // A refused buffer had the wrong shape.
        let refused = if self.alg.is_aead() { CryptoError::TooShort } else { CryptoError::BadBlockLength };
        let (iv, icv) = self.alg.iv_icv();
        let block = if self.alg.is_aead() { 1 } else { 16 };
        let mut start = 0;
        while start < n {
            let end = (start + MAX_BURST).min(n);
            let mut ptrs = [std::ptr::null_mut::<u8>(); MAX_BURST];
            let mut lens = [0u32; MAX_BURST];
            let mut his = [0u32; MAX_BURST];
            let mut idx = [0usize; MAX_BURST];
            let mut k = 0;
            for i in start..end {
                let len = bufs[i].len();
                // The shim trusts these checks (it does not bound-check).
                let fits = len >= 8 + iv + icv && len <= u32::MAX as usize && (len - 8 - iv - icv) & (block - 1) == 0;
                if !fits || (!self.alg.is_aead() && seq_hi.is_some() && len < 8 + iv + 12) {
                    results[i] = Err(refused);
                    continue;
                }
                ptrs[k] = bufs[i].as_mut_ptr();
                lens[k] = len as u32;
                his[k] = seq_hi.map_or(0, |s| s[i]);
                idx[k] = i;
                k += 1;
            }
            if k > 0 {
                let mut st = [0u8; MAX_BURST];
                let done = with_mgr(|m| {
                    let Some(m) = m else { return false };
                    // SAFETY: ptrs[..k] point into distinct live &mut buffers of
                    // lens[..k] bytes, checked above to hold header, IV, whole
                    // cipher blocks and ICV; his/st have k entries; the keys
                    // are a live context; the manager belongs to this thread.
                    unsafe {
                        sys::espgw_imb_burst(
                            m.as_ptr(),
                            self.ptr.as_ptr(),
                            i32::from(encrypt),
                            ptrs.as_ptr(),
                            lens.as_ptr(),
                            if seq_hi.is_some() { his.as_ptr() } else { std::ptr::null() },
                            st.as_mut_ptr(),
                            k as u32,
                        )
                    };
                    true
                });
                let verdict = |s: u8| match (done, u32::from(s)) {
                    (true, sys::ESPGW_IMB_OK) => Ok(()),
                    (true, sys::ESPGW_IMB_AUTH_FAILED) => Err(CryptoError::AuthFailed),
                    _ => Err(refused),
                };
                if k == end - start {
                    // Nothing refused (the common case): the statuses are the slots' in order.
                    for (r, &s) in results[start..end].iter_mut().zip(&st[..k]) {
                        *r = verdict(s);
                    }
                } else {
                    for j in 0..k {
                        results[idx[j]] = verdict(st[j]);
                    }
                }
            }
            start = end;
        }
    }
}

/// The registered backend: one static per process.
struct IpsecMb;

static BACKEND: IpsecMb = IpsecMb;

/// Make intel-ipsec-mb available to the core as the `ipsec-mb` backend (and
/// as `auto` for the algorithms it runs). Idempotent.
pub fn register() {
    let _ = espgw_core::crypto::register_ipsec_mb(&BACKEND);
}

fn mb_algorithm(a: Algorithm) -> Option<MbAlgorithm> {
    match a {
        Algorithm::AesGcm128 => Some(MbAlgorithm::Gcm128),
        Algorithm::AesGcm256 => Some(MbAlgorithm::Gcm256),
        Algorithm::AesCbc128HmacSha1 => Some(MbAlgorithm::Cbc128Sha1),
        Algorithm::AesCbc256HmacSha1 => Some(MbAlgorithm::Cbc256Sha1),
        Algorithm::Chacha20Poly1305 => Some(MbAlgorithm::Chacha20Poly1305),
        Algorithm::NullHmacSha1 => None,
    }
}

impl ExternalBackend for IpsecMb {
    fn supports(&self, algorithm: Algorithm) -> bool {
        mb_algorithm(algorithm).is_some() && arch().is_some()
    }

    fn build(
        &self,
        algorithm: Algorithm,
        enc_key: &[u8],
        auth_key: &[u8],
        iv_seed: [u8; 16],
    ) -> Result<Box<dyn EspTransform>, CryptoError> {
        let unsupported = CryptoError::Unsupported { backend: "ipsec-mb", algorithm: algorithm.name() };
        let alg = mb_algorithm(algorithm).ok_or(unsupported)?;
        let keys = MbKeys::new(alg, enc_key, auth_key).ok_or(unsupported)?;
        let iv_seed = Zeroizing::new(iv_seed);
        let iv_gen =
            (!alg.is_aead()).then(|| Box::new(aes::Aes128::new_from_slice(&iv_seed[..]).expect("16-byte key")));
        Ok(Box::new(MbTransform { keys, iv_gen }))
    }
}

/// One SA's transform: its key context and, for CBC, the IV generator
/// (the same construction as the built-in backend, so bursts are
/// byte-identical across backends).
struct MbTransform {
    keys: MbKeys,
    iv_gen: Option<Box<aes::Aes128>>,
}

impl EspTransform for MbTransform {
    fn make_iv(&self, seq: u64, iv: &mut [u8]) {
        // CBC only: AEAD IVs are written by the core's Transform.
        if let Some(g) = &self.iv_gen {
            cbc_iv(g, seq, iv);
        }
    }

    fn seal_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        self.keys.burst(true, bufs, seq_hi, results)
    }

    fn open_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        self.keys.burst(false, bufs, seq_hi, results)
    }
}
