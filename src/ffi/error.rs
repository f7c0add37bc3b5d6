//! Status codes, the calling thread's last error, and the panic boundary every export runs in.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// Result of every fallible call. `MG_STATUS_OK` (0) is success; every other value has a
/// message for `mg_last_error_message`. Values are stable and never renumbered.
pub type mg_status = i32;

/// Success.
pub const MG_STATUS_OK: mg_status = 0;
/// A required pointer argument was NULL.
pub const MG_STATUS_NULL_ARGUMENT: mg_status = 1;
/// An argument is outside its valid range.
pub const MG_STATUS_INVALID_ARGUMENT: mg_status = 2;
/// The config JSON is malformed, has an unknown key, or a value outside its valid range.
pub const MG_STATUS_INVALID_CONFIG: mg_status = 3;
/// A step or index past the end.
pub const MG_STATUS_OUT_OF_RANGE: mg_status = 4;
/// A caller buffer is too small; the call says how large it must be.
pub const MG_STATUS_BUFFER_TOO_SMALL: mg_status = 5;
/// A file could not be read or written.
pub const MG_STATUS_IO: mg_status = 6;
/// libtorch raised an error.
pub const MG_STATUS_TORCH: mg_status = 7;
/// CUDA was requested but is not available or not linked.
pub const MG_STATUS_CUDA_UNAVAILABLE: mg_status = 8;
/// Returned by no function since mg_trainer_fit reports a stop its callback asked for as
/// success (mg_summary.cancelled); kept so that the number is never given another meaning.
pub const MG_STATUS_CANCELLED: mg_status = 9;
/// The library was built without the feature this call needs.
pub const MG_STATUS_UNSUPPORTED: mg_status = 10;
/// A bug inside the library was caught at the boundary; the message says where.
pub const MG_STATUS_PANIC: mg_status = 11;
/// A video could not be decoded, or a clip store is corrupt; the message names the file.
pub const MG_STATUS_DATA: mg_status = 12;
/// The handle is inside another call that this one may not overlap: a progress callback
/// calling back into the trainer that runs it, or two threads on one trainer. The message
/// names both calls.
pub const MG_STATUS_BUSY: mg_status = 13;

/// Errors as the boundary sees them: the library's, plus the argument checks of the C layer.
#[derive(Debug)]
pub(crate) enum FfiError {
    Null(&'static str),
    Invalid(String),
    // Only trainers have calls to refuse, and without libtorch there are none.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    Busy(String),
    Lib(Error),
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError::Lib(e)
    }
}

impl FfiError {
    fn status(&self) -> mg_status {
        match self {
            FfiError::Null(_) => MG_STATUS_NULL_ARGUMENT,
            FfiError::Invalid(_) => MG_STATUS_INVALID_ARGUMENT,
            FfiError::Busy(_) => MG_STATUS_BUSY,
            FfiError::Lib(e) => match e {
                Error::Config(_) => MG_STATUS_INVALID_CONFIG,
                Error::InvalidArgument(_) => MG_STATUS_INVALID_ARGUMENT,
                Error::OutOfRange(_) => MG_STATUS_OUT_OF_RANGE,
                Error::BufferTooSmall(_) => MG_STATUS_BUFFER_TOO_SMALL,
                Error::Io { .. } => MG_STATUS_IO,
                Error::Decode { .. } | Error::Data(_) => MG_STATUS_DATA,
                Error::Cancelled(_) => MG_STATUS_CANCELLED,
                Error::Torch(_) => MG_STATUS_TORCH,
                Error::Internal(_) => MG_STATUS_PANIC,
                Error::CudaUnavailable(_) => MG_STATUS_CUDA_UNAVAILABLE,
                Error::Unsupported(_) => MG_STATUS_UNSUPPORTED,
            },
        }
    }

    fn message(&self) -> String {
        match self {
            FfiError::Null(name) => format!("argument `{name}` is NULL"),
            FfiError::Invalid(msg) | FfiError::Busy(msg) => msg.clone(),
            FfiError::Lib(e) => e.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(msg: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

/// Makes `e` the thread's last error, as a failure of export `name`, and gives its status.
pub(crate) fn report(name: &str, e: &FfiError) -> mg_status {
    set_last_error(format!("{name}: {}", e.message()));
    e.status()
}

/// Runs an export's body: maps its error to a status and the thread's last-error text, and
/// stops any panic here, since unwinding into C is undefined.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), FfiError>) -> mg_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MG_STATUS_OK,
        Ok(Err(e)) => report(name, &e),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("{name}: internal error (panic): {what}"));
            MG_STATUS_PANIC
        }
    }
}

/// Like [`guard`] for exports that return a value instead of a status: `fallback` on panic.
pub(crate) fn guard_value<T>(name: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(_) => {
            set_last_error(format!("{name}: internal error (panic)"));
            fallback
        }
    }
}

/// The body of every `mg_*_free`: drops a handle that came from `Box::into_raw`, NULL a no-op,
/// under the same panic boundary as every other export (a destructor that panics sets the last
/// error instead of unwinding into C).
pub(crate) fn free_box<T>(name: &str, p: *mut T) {
    guard_value(name, (), || {
        if !p.is_null() {
            // SAFETY: by contract a non-NULL pointer came from the matching constructor and is
            // freed once.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

pub(crate) fn non_null<'a, T>(p: *const T, name: &'static str) -> Result<&'a T, FfiError> {
    // SAFETY: the caller promises that a non-NULL pointer points to a live T.
    unsafe { p.as_ref() }.ok_or(FfiError::Null(name))
}

pub(crate) fn out_ptr<'a, T>(p: *mut T, name: &'static str) -> Result<&'a mut T, FfiError> {
    // SAFETY: the caller promises that a non-NULL out-pointer is writable.
    unsafe { p.as_mut() }.ok_or(FfiError::Null(name))
}

pub(crate) fn c_str<'a>(p: *const c_char, name: &'static str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(name));
    }
    // SAFETY: non-NULL and, by contract, NUL-terminated.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| FfiError::Invalid(format!("argument `{name}` is not UTF-8: {e}")))
}

/// Copies the calling thread's last error message into `buf`, NUL-terminated and truncated
/// to `len` bytes, and returns the message's full length (without the NUL), like snprintf:
/// a return value >= `len` means the text was cut. `buf` may be NULL when `len` is 0, to ask
/// for the length. The message stays until the next failing call on this thread; it is empty
/// before any failure.
#[no_mangle]
pub extern "C" fn mg_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value("mg_last_error_message", 0, || {
        LAST_ERROR.with(|e| copy_out(&e.borrow(), buf, len))
    })
}

/// snprintf-style copy of `text` into a caller buffer; returns the full length.
pub(crate) fn copy_out(text: &str, buf: *mut c_char, len: usize) -> usize {
    let bytes = text.as_bytes();
    if !buf.is_null() && len > 0 {
        let n = bytes.len().min(len - 1);
        // SAFETY: the caller promises `buf` holds `len` bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    bytes.len()
}

/// A static, human-readable name for a status ("MG_STATUS_OK", ...); "unknown status" for a
/// value that is none of them. Never NULL.
#[no_mangle]
pub extern "C" fn mg_status_str(status: mg_status) -> *const c_char {
    let s: &'static CStr = match status {
        MG_STATUS_OK => c"MG_STATUS_OK",
        MG_STATUS_NULL_ARGUMENT => c"MG_STATUS_NULL_ARGUMENT",
        MG_STATUS_INVALID_ARGUMENT => c"MG_STATUS_INVALID_ARGUMENT",
        MG_STATUS_INVALID_CONFIG => c"MG_STATUS_INVALID_CONFIG",
        MG_STATUS_OUT_OF_RANGE => c"MG_STATUS_OUT_OF_RANGE",
        MG_STATUS_BUFFER_TOO_SMALL => c"MG_STATUS_BUFFER_TOO_SMALL",
        MG_STATUS_IO => c"MG_STATUS_IO",
        MG_STATUS_TORCH => c"MG_STATUS_TORCH",
        MG_STATUS_CUDA_UNAVAILABLE => c"MG_STATUS_CUDA_UNAVAILABLE",
        MG_STATUS_CANCELLED => c"MG_STATUS_CANCELLED",
        MG_STATUS_UNSUPPORTED => c"MG_STATUS_UNSUPPORTED",
        MG_STATUS_PANIC => c"MG_STATUS_PANIC",
        MG_STATUS_DATA => c"MG_STATUS_DATA",
        MG_STATUS_BUSY => c"MG_STATUS_BUSY",
        _ => c"unknown status",
    };
    s.as_ptr()
}
