//! Mixed precision: autocast with a chosen dtype on the CPU or CUDA, and a dynamic loss scaler
//! for fp16 with torch.amp.GradScaler's defaults.
//!
//! tch's `autocast` turns on CUDA autocast with its default dtype, which is fp16; the dtype and
//! the CPU switch are not in its API, so they go through the C++ bridge (src/bridge/), which
//! calls ATen's autocast functions (`c10::DeviceType` and `c10::ScalarType` are `int8_t` enums,
//! passed as such).

use std::ffi::c_int;

use tch::{Device, Kind, Tensor};

use crate::bridge::{self, mgb_autocast_enter, mgb_autocast_exit};
use crate::error::{Error, Result};
use crate::model::scalar;
use crate::schedule::PrecisionChoice;

/// c10::DeviceType values.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
/// c10::ScalarType values.
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    /// `run.precision` on `device`: `auto` is bf16 on CUDA and fp32 on the CPU.
    pub fn resolve(choice: PrecisionChoice, device: Device) -> Result<Precision> {
        match choice {
            PrecisionChoice::Auto if device.is_cuda() => Ok(Precision::Bf16),
            PrecisionChoice::Auto | PrecisionChoice::Fp32 => Ok(Precision::Fp32),
            // CPU autocast of 3D convolutions is far slower than fp32 on CPUs without bf16
            // units, and libtorch 2.11's CPU path turned a tiny SlowFast to NaN after one step.
            PrecisionChoice::Bf16 | PrecisionChoice::Fp16 if !device.is_cuda() => {
                Err(Error::InvalidArgument(format!(
                    "precision {choice} needs a CUDA device (got {device:?}); use fp32 or auto on \
                     the CPU"
                )))
            }
            PrecisionChoice::Bf16 => Ok(Precision::Bf16),
            PrecisionChoice::Fp16 => Ok(Precision::Fp16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    fn scalar(self) -> Option<i8> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(SCALAR_BFLOAT16),
            Precision::Fp16 => Some(SCALAR_HALF),
        }
    }
}

/// Runs `f` under autocast to `precision` on `device`'s type, as `torch.autocast(device_type,
/// dtype)`: the previous state is restored after, and the cast-weight cache is cleared when the
/// outermost region ends (the weights change at the next optimizer step).
pub fn autocast<T>(
    device: Device,
    precision: Precision,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(dtype) = precision.scalar() else {
        return f();
    };
    let dev = if device.is_cuda() {
        DEVICE_CUDA
    } else {
        DEVICE_CPU
    };
    let (mut was_enabled, mut was_dtype): (c_int, i8) = (0, 0);
    bridge::call("autocast", |e, l| {
        // SAFETY: valid device and scalar type values; the out-pointers are live locals.
        unsafe { mgb_autocast_enter(dev, dtype, &mut was_enabled, &mut was_dtype, e, l) }
    })?;
    /// Leaves the region when `f` panics; after a return, `exit` does it and reports.
    struct Region {
        dev: i8,
        was: (c_int, i8),
        open: bool,
    }
    impl Region {
        fn exit(&mut self) -> Result<()> {
            self.open = false;
            let (dev, (enabled, dtype)) = (self.dev, self.was);
            bridge::call("autocast", |e, l| {
                // SAFETY: the state mgb_autocast_enter returned, for the same device.
                unsafe { mgb_autocast_exit(dev, enabled, dtype, e, l) }
            })
        }
    }
    impl Drop for Region {
        fn drop(&mut self) {
            if self.open {
                // Unwinding already: the panic is what is reported.
                let _ = self.exit();
            }
        }
    }
    let mut region = Region {
        dev,
        was: (was_enabled, was_dtype),
        open: true,
    };
    let out = f();
    region.exit()?;
    out
}

/// Whether autocast is on for `device`'s type, and its dtype (a c10::ScalarType value).
#[cfg(test)]
fn autocast_state(device: i8) -> Result<(bool, i8)> {
    let (mut enabled, mut dtype): (c_int, i8) = (0, 0);
    bridge::call("autocast", |e, l| {
        // SAFETY: out-pointers to live locals.
        unsafe { bridge::mgb_autocast_state(device, &mut enabled, &mut dtype, e, l) }
    })?;
    Ok((enabled != 0, dtype))
}

/// torch.amp.GradScaler with its defaults (initial scale 2^16, growth x2 after 2000 clean
/// steps, back-off x0.5 on overflow): the loss is multiplied by the scale before backward; the
/// gradients are unscaled before the step, which is skipped when any is inf or NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    /// Clean steps since the last change of scale.
    pub growth_tracker: u32,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            growth_tracker: 0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// The loss times the scale. Panics when libtorch fails: [`LossScaler::f_scale_loss`]
    /// returns the error instead.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// The loss times the scale.
    pub fn f_scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul(&scalar(self.scale)?)?)
    }

    /// Divides the gradients by the scale in place; true when all of them are finite. Errors:
    /// libtorch's (a gradient it cannot divide in place), which leave the gradients partly
    /// unscaled: the step must not go on with them.
    pub fn unscale(&self, grads: &[Tensor]) -> Result<bool> {
        if grads.is_empty() {
            return Ok(true);
        }
        let inv = scalar(1.0 / self.scale)?;
        // One sum per gradient and one sync: inf and NaN survive a sum, finite gradients of a
        // trained network do not overflow it.
        let sums = tch::no_grad(|| {
            grads
                .iter()
                .map(|g| {
                    let _ = g.shallow_clone().f_mul_(&inv)?;
                    Ok(g.f_sum(Kind::Float)?)
                })
                .collect::<Result<Vec<Tensor>>>()
        })?;
        let total = Tensor::f_stack(&sums, 0)?
            .f_sum(Kind::Float)?
            .f_double_value(&[])?;
        Ok(total.is_finite())
    }

    /// After a step: back off on overflow, grow after `growth_interval` clean steps.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        }
    }

    /// The state as two scalar tensors, for the optimizer's checkpoint file.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![
            (SCALE_KEY.into(), scalar(self.scale)?),
            (TRACKER_KEY.into(), scalar(i64::from(self.growth_tracker))?),
        ])
    }

    /// Takes the scaler's entries out of a checkpoint's optimizer state.
    pub fn take_state(&mut self, state: &mut Vec<(String, Tensor)>) -> Result<()> {
        let mut rest = Vec::with_capacity(state.len());
        for (k, t) in state.drain(..) {
            match k.as_str() {
                SCALE_KEY => self.scale = t.f_double_value(&[])?,
                TRACKER_KEY => self.growth_tracker = t.f_int64_value(&[])? as u32,
                _ => rest.push((k, t)),
            }
        }
        *state = rest;
        Ok(())
    }
}

pub const SCALE_KEY: &str = "amp.loss_scale";
pub const TRACKER_KEY: &str = "amp.growth_tracker";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_sets_the_dtype_and_restores() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let before = autocast_state(DEVICE_CPU).unwrap();
        let y = autocast(Device::Cpu, Precision::Bf16, || {
            assert_eq!(autocast_state(DEVICE_CPU).unwrap(), (true, SCALAR_BFLOAT16));
            Ok(a.matmul(&a))
        })
        .unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let y = autocast(Device::Cpu, Precision::Fp32, || Ok(a.matmul(&a))).unwrap();
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(autocast_state(DEVICE_CPU).unwrap(), before);
        assert!(!before.0);
        // An error inside the region is returned, and the region is left all the same.
        let e = autocast(Device::Cpu, Precision::Bf16, || -> Result<()> {
            Err(Error::InvalidArgument("inside".into()))
        });
        assert!(e.is_err());
        assert_eq!(autocast_state(DEVICE_CPU).unwrap(), before);
    }

    #[test]
    fn scaler_unscales_skips_and_adapts() {
        let mut s = LossScaler {
            growth_interval: 2,
            ..LossScaler::default()
        };
        let g = Tensor::from_slice(&[65536.0f32, -131072.0]);
        assert!(s.unscale(std::slice::from_ref(&g)).unwrap());
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, -2.0]);
        s.update(true);
        assert_eq!(s.scale, 65536.0);
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker), (131072.0, 0));
        let bad = Tensor::from_slice(&[1.0f32, f32::INFINITY]);
        assert!(!s.unscale(&[g.shallow_clone(), bad]).unwrap());
        s.update(false);
        assert_eq!(s.scale, 65536.0);
        let mut state = s.state().unwrap();
        state.push(("w".into(), Tensor::from(1.0)));
        let mut back = LossScaler::default();
        s.scale = 8.0;
        s.growth_tracker = 1;
        let mut state2 = s.state().unwrap();
        back.take_state(&mut state2).unwrap();
        assert_eq!((back.scale, back.growth_tracker), (8.0, 1));
        LossScaler::default().take_state(&mut state).unwrap();
        assert_eq!(state.len(), 1);
    }
}
