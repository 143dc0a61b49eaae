//! Application commands on DPDK's telemetry socket (`dpdk-telemetry.py`),
//! next to the `/ethdev/...` ones DPDK registers itself.
//!
//! DPDK calls a command's callback on its telemetry thread with no user
//! pointer (22.11), so the commands live in a process-wide table: one C
//! trampoline looks the command up and calls its Rust handler, which
//! answers with a [`TelValue`]; the trampoline writes it into DPDK's
//! `rte_tel_data` within DPDK's limits (dictionary and array sizes, string
//! lengths), cutting what does not fit rather than failing.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::{Mutex, OnceLock};

use dpdk_sys as sys;

use crate::DpdkError;

/// A scalar in a telemetry dictionary.
#[derive(Debug, Clone, PartialEq)]
pub enum TelScalar {
    U64(u64),
    Int(i32),
    Str(String),
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq)]
pub enum TelValue {
    /// `{"name": value, ...}` (at most [`MAX_DICT`] entries).
    Dict(Vec<(String, TelScalar)>),
    /// `["a", "b", ...]` (at most [`MAX_ARRAY`] entries).
    Strings(Vec<String>),
}

/// DPDK's limits (rte_telemetry.h).
pub const MAX_DICT: usize = sys::RTE_TEL_MAX_DICT_ENTRIES as usize;
pub const MAX_ARRAY: usize = sys::RTE_TEL_MAX_ARRAY_ENTRIES as usize;
/// Longest string value DPDK keeps (including its NUL).
const MAX_STRING: usize = sys::RTE_TEL_MAX_STRING_LEN as usize;

/// A command's handler: `params` is what follows the comma (`/cmd,params`).
pub type Handler = fn(cmd: &str, params: &str) -> TelValue;

fn table() -> &'static Mutex<HashMap<String, Handler>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Handler>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Register `cmd` (e.g. `/espgw/sa/list`) with its help text. DPDK copies
/// both; a command can be registered once per process.
pub fn register(cmd: &str, help: &str, handler: Handler) -> Result<(), DpdkError> {
    let c = CString::new(cmd).map_err(|_| DpdkError::Telemetry(format!("{cmd:?}: NUL in command")))?;
    let h = CString::new(help).map_err(|_| DpdkError::Telemetry(format!("{cmd:?}: NUL in help")))?;
    table().lock().unwrap_or_else(|p| p.into_inner()).insert(cmd.to_string(), handler);
    // SAFETY: both strings are valid and NUL-terminated for the call (DPDK
    // copies them into its own table); `trampoline` has the callback's ABI.
    let rc = unsafe { sys::rte_telemetry_register_cmd(c.as_ptr(), Some(trampoline), h.as_ptr()) };
    if rc < 0 {
        return Err(DpdkError::Telemetry(format!("cannot register {cmd}: error {rc} (name invalid or taken)")));
    }
    Ok(())
}

/// The callback DPDK calls for every registered command.
unsafe extern "C" fn trampoline(cmd: *const c_char, params: *const c_char, d: *mut sys::rte_tel_data) -> c_int {
    // SAFETY: DPDK passes the NUL-terminated command it matched, and params
    // either NULL or a NUL-terminated string, valid during the call.
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL here, NUL-terminated and valid during the call (above).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (cmd, params) = (text(cmd), text(params));
    let Some(handler) = table().lock().unwrap_or_else(|p| p.into_inner()).get(&cmd).copied() else {
        return -1;
    };
    // A panic must not unwind into C.
    let Ok(value) = std::panic::catch_unwind(|| handler(&cmd, &params)) else {
        return -1;
    };
    // SAFETY: `d` is the response buffer DPDK hands to this callback, valid
    // and exclusively ours until we return.
    unsafe { fill(d, &value) };
    0
}

/// A C string DPDK accepts: no NUL, cut to its length limit on a char boundary.
fn c_text(s: &str) -> CString {
    let mut end = s.len().min(MAX_STRING - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    CString::new(s[..end].replace('\0', "")).unwrap_or_default()
}

/// Write `value` into `d`.
///
/// # Safety
/// `d` must be a valid `rte_tel_data` owned by the caller for the call.
unsafe fn fill(d: *mut sys::rte_tel_data, value: &TelValue) {
    // SAFETY (every call below): `d` is valid per this function's contract;
    // the names and strings are NUL-terminated CStrings living through each call;
    // the entry counts stay within DPDK's limits.
    match value {
        // SAFETY: see above (valid `d`, live CStrings, counts within limits).
        TelValue::Dict(entries) => unsafe {
            sys::rte_tel_data_start_dict(d);
            for (name, v) in entries.iter().take(MAX_DICT) {
                let n = c_text(name);
                match v {
                    TelScalar::U64(x) => sys::rte_tel_data_add_dict_u64(d, n.as_ptr(), *x),
                    TelScalar::Int(x) => sys::rte_tel_data_add_dict_int(d, n.as_ptr(), *x),
                    TelScalar::Str(s) => sys::rte_tel_data_add_dict_string(d, n.as_ptr(), c_text(s).as_ptr()),
                };
            }
        },
        // SAFETY: as for the dictionary above.
        TelValue::Strings(items) => unsafe {
            sys::rte_tel_data_start_array(d, sys::RTE_TEL_STRING_VAL);
            for s in items.iter().take(MAX_ARRAY) {
                sys::rte_tel_data_add_array_string(d, c_text(s).as_ptr());
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_to_what_dpdk_keeps() {
        let long = "é".repeat(200);
        let c = c_text(&long);
        assert!(c.as_bytes().len() < MAX_STRING);
        assert!(std::str::from_utf8(c.as_bytes()).is_ok(), "cut on a char boundary");
        assert_eq!(c_text("a\0b").as_bytes(), b"ab");
    }
}
