//! Structs the caller allocates and the library may grow (`mg_dist_options`, `mg_summary`).
//! Each begins with `size_t struct_size`, the size the caller's header gives it, so a program
//! built against one header keeps working with a library built from another:
//!
//! - smaller than the library's struct (an older header): the fields it has are used, the
//!   newer ones take their defaults on input and are not written on output;
//! - larger (a newer header): on input the bytes past the library's struct must be zero, as
//!   the Linux kernel's `copy_struct_from_user` requires, since a field this library does not
//!   know that asks for something cannot be ignored silently; on output they are not written
//!   and `struct_size` comes back as the count that was, so the caller sees which fields hold
//!   values.
//!
//! A field added later must therefore go at the end and take 0 for "as before".
// Without libtorch the trainer's calls return UNSUPPORTED before reading these structs.
#![cfg_attr(not(feature = "torch"), allow(dead_code))]

use super::error::FfiError;

/// No struct of this API comes near this: a larger `struct_size` is a value never set, not
/// a header from the future, and reading that far could run off the caller's memory.
const MAX_STRUCT_SIZE: usize = 4096;

/// # Safety
/// `Self` is `#[repr(C)]` and its first field is `struct_size: usize`.
pub(crate) unsafe trait Versioned: Copy {
    /// The C type's name, for messages.
    const NAME: &'static str;
    /// The size of the first layout that had `struct_size`: nothing smaller was ever valid.
    const FIRST_SIZE: usize;
}

/// # Safety
/// Every bit pattern of `Self`'s bytes is a valid value (raw pointers, integers, floats; no
/// bool or enum), so bytes the caller wrote may be copied into one.
pub(crate) unsafe trait AnyBits: Versioned {}

/// The caller's `struct_size`, checked against what any layout of `T` can be.
fn caller_size<T: Versioned>(p: *const T, what: &str, how: &str) -> Result<usize, FfiError> {
    // SAFETY: non-NULL (checked by the callers) and, by contract, a T of the caller's
    // header, which begins with struct_size.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    let ours = std::mem::size_of::<T>();
    if size < T::FIRST_SIZE || size > MAX_STRUCT_SIZE {
        return Err(FfiError::Invalid(format!(
            "{what}->struct_size is {size}, which no {name} has ({ours} bytes in this library): {how}",
            name = T::NAME,
        )));
    }
    Ok(size)
}

/// Reads a versioned input struct: `defaults` with the caller's fields copied over it.
pub(crate) fn read_in<T: AnyBits>(
    p: *const T,
    what: &'static str,
    defaults: T,
) -> Result<T, FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(what));
    }
    let size = caller_size(p, what, &format!("start it with {}_default", T::NAME))?;
    let ours = std::mem::size_of::<T>();
    if size > ours {
        // SAFETY: the caller's struct holds `size` bytes, by contract.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            return Err(FfiError::Invalid(format!(
                "{what} sets byte {} of its {size}, past the {ours} bytes of this library's {}: \
                 a field from a newer header that this libmultigrid ({}) does not have; leave it 0",
                ours + i,
                T::NAME,
                env!("CARGO_PKG_VERSION"),
            )));
        }
    }
    let mut value = defaults;
    // SAFETY: both hold at least min(size, ours) bytes, and any bytes make a valid T (AnyBits).
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            (&mut value as *mut T).cast::<u8>(),
            size.min(ours),
        );
    }
    Ok(value)
}

/// Fills a versioned input struct of the caller's `size` with `value`, the bytes past this
/// library's struct with zeros, and sets its `struct_size` to `size`.
pub(crate) fn write_default<T: Versioned>(
    p: *mut T,
    size: usize,
    what: &'static str,
    value: &T,
) -> Result<(), FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(what));
    }
    let ours = std::mem::size_of::<T>();
    if size < T::FIRST_SIZE || size > MAX_STRUCT_SIZE {
        return Err(FfiError::Invalid(format!(
            "struct_size is {size}, which no {name} has ({ours} bytes in this library): pass \
             sizeof(*{what}), the size of {name} in your header",
            name = T::NAME,
        )));
    }
    // SAFETY: the caller's struct holds `size` bytes, by contract; `value` holds `ours`.
    unsafe {
        let dst = p.cast::<u8>();
        std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), dst, size.min(ours));
        if size > ours {
            std::ptr::write_bytes(dst.add(ours), 0, size - ours);
        }
        p.cast::<usize>().write_unaligned(size);
    }
    Ok(())
}

/// A versioned output struct, checked before the work that fills it starts.
pub(crate) struct Out<T: Versioned> {
    p: *mut T,
    size: usize,
}

impl<T: Versioned> Out<T> {
    pub(crate) fn new(p: *mut T, what: &'static str) -> Result<Self, FfiError> {
        if p.is_null() {
            return Err(FfiError::Null(what));
        }
        let how = format!("set it to sizeof({}) before the call", T::NAME);
        let size = caller_size(p, what, &how)?;
        Ok(Out { p, size })
    }

    /// Writes the fields both layouts have, and the count of bytes written to `struct_size`.
    pub(crate) fn write(self, value: &T) {
        let n = self.size.min(std::mem::size_of::<T>());
        // SAFETY: the caller's struct holds `size` bytes (contract), `value` holds size_of::<T>.
        unsafe {
            std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), self.p.cast::<u8>(), n);
            self.p.cast::<usize>().write_unaligned(n);
        }
    }
}
