//! The mdbus shared-memory ring as a benchmark channel (pending the ring's API).

use std::path::Path;

use super::BenchError;
use super::ring::ShmMode;
use super::transport::{Msg, MsgRx, MsgTx, XferError};

/// Placeholder environment.
#[derive(Debug)]
pub struct ShmEnv;

/// Placeholder sender.
#[derive(Debug)]
pub struct MdbusTx;
/// Placeholder receiver.
#[derive(Debug)]
pub struct MdbusRx;

impl ShmEnv {
    /// Placeholder.
    pub fn new(
        _root: Option<&Path>,
        _cap: usize,
        _len: usize,
        _mode: ShmMode,
    ) -> Result<ShmEnv, BenchError> {
        Ok(ShmEnv)
    }
    /// Placeholder.
    pub fn channel<const N: usize>(
        &self,
        _lossless: bool,
    ) -> Result<(MdbusTx, MdbusRx), BenchError> {
        Err(BenchError::Internal(
            "mdbus-shm is not available yet".into(),
        ))
    }
}
impl MsgTx for MdbusTx {
    fn try_send(&mut self, _m: Msg) -> Result<bool, XferError> {
        Err(XferError::Closed)
    }
}
impl MsgRx for MdbusRx {
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        Err(XferError::Closed)
    }
    fn recv_batch<F: FnMut(Msg)>(&mut self, _max: usize, _f: F) -> Result<usize, XferError> {
        Err(XferError::Closed)
    }
}
