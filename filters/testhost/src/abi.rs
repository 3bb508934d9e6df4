//! The host side of the proxy-wasm ABI (0.2.1, as Envoy implements it) and the few WASI calls a
//! Rust `wasm32-wasip1` module imports, as wasmtime host functions.
//!
//! Everything a call needs is in the store's [`VmState`]: the VM's own state (plugin
//! configuration, contexts, metric ids, the context being called) and an `Arc` of the proxy-wide
//! [`Env`]. Guest memory is read and written through the module's exported `memory`; data
//! returned to the guest is placed in memory the guest allocates with its exported
//! `proxy_on_memory_allocate`, as Envoy does. Imports not defined here trap when called.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::{Caller, Extern, Linker, Memory};

use crate::env::{Env, LogLevel, MetricKind, SetOutcome, lock};

/// Proxy-wasm status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    CasMismatch = 8,
}

/// WASI errno values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;

type Result<T> = wasmtime::Result<T>;

/// A local response a module sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// The response code details Envoy would log.
    pub details: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// gRPC status, or -1 for none.
    pub grpc_status: i32,
}

impl LocalResponse {
    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP context's state.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) maps: [Vec<(String, String)>; 4],
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Every `proxy_set_property` call the module made in this stream, in order.
    pub(crate) properties_set: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) local_response: Option<LocalResponse>,
    pub(crate) continued: Vec<i32>,
}

/// The state of one VM, the store's data.
pub(crate) struct VmState {
    pub(crate) env: Arc<Env>,
    pub(crate) index: usize,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) root_properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) streams: HashMap<u32, Stream>,
    /// The HTTP context being called, if any (host calls carry no context id).
    pub(crate) current: Option<u32>,
    pub(crate) metric_ids: HashMap<u32, (MetricKind, String)>,
    pub(crate) tick_period_ms: u32,
    pub(crate) log_level: i32,
    rng: u64,
}

impl VmState {
    pub(crate) fn new(env: Arc<Env>, index: usize) -> VmState {
        VmState {
            env,
            index,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            root_properties: HashMap::new(),
            streams: HashMap::new(),
            current: None,
            metric_ids: HashMap::new(),
            tick_period_ms: 0,
            log_level: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn stream(&mut self) -> Option<&mut Stream> {
        let id = self.current?;
        self.streams.get_mut(&id)
    }
}

/// Joins property path segments the way the ABI sends them (NUL-separated).
pub(crate) fn property_key(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

// ---- guest memory helpers -------------------------------------------------------------------

fn memory(caller: &mut Caller<'_, VmState>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => wasmtime::bail!("the module exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let mut bytes = vec![0; len as u32 as usize];
    memory.read(&*caller, ptr as u32 as usize, &mut bytes)?;
    Ok(bytes)
}

fn read_string(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    memory.write(&mut *caller, ptr as u32 as usize, bytes)?;
    Ok(())
}

fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `data` into memory the guest allocates, and stores its address and size at
/// `ptr_out`/`size_out` (NULL and 0 for empty data).
fn return_bytes(
    caller: &mut Caller<'_, VmState>,
    data: &[u8],
    ptr_out: i32,
    size_out: i32,
) -> Result<()> {
    let address = if data.is_empty() {
        0
    } else {
        let allocate = match caller.get_export("proxy_on_memory_allocate") {
            Some(Extern::Func(func)) => func.typed::<i32, i32>(&*caller)?,
            _ => wasmtime::bail!("the module exports no proxy_on_memory_allocate"),
        };
        let len = i32::try_from(data.len())?;
        let address = allocate.call(&mut *caller, len)?;
        write(caller, address, data)?;
        address
    };
    write_u32(caller, ptr_out, address as u32)?;
    write_u32(caller, size_out, u32::try_from(data.len())?)?;
    Ok(())
}

// ---- serialization --------------------------------------------------------------------------

/// The ABI's header map encoding: count, (key len, value len)*, (key NUL value NUL)*.
pub(crate) fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Decodes [`serialize_map`]'s format; `None` if malformed.
pub(crate) fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut map = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let key_len = word(4 + index * 8)?;
        let value_len = word(8 + index * 8)?;
        let key = bytes.get(data..data + key_len)?;
        data += key_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        map.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(map)
}

// ---- the host functions ---------------------------------------------------------------------

fn status(status: Status) -> Result<i32> {
    Ok(status as i32)
}

/// Defines every host function on `linker`.
pub(crate) fn define(linker: &mut Linker<VmState>) -> Result<()> {
    define_proxy(linker)?;
    define_wasi(linker)?;
    Ok(())
}

fn define_proxy(linker: &mut Linker<VmState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let message = read_string(&mut caller, ptr, len)?;
            let Some(level) = LogLevel::from_abi(level) else {
                return status(Status::BadArgument);
            };
            let state = caller.data();
            state.env.log(state.index, level, message);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, VmState>, out: i32| -> Result<i32> {
            let level = caller.data().log_level as u32;
            write_u32(&mut caller, out, level)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, VmState>, out: i32| -> Result<i32> {
            let now = caller.data().env.now();
            write(&mut caller, out, &now.to_le_bytes())?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, VmState>, period: i32| -> Result<i32> {
            caller.data_mut().tick_period_ms = period as u32;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, VmState>,
         buffer: i32,
         start: i32,
         max: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let state = caller.data_mut();
            let data = match buffer {
                0 => state.stream().map(|s| s.request_body.clone()),
                1 => state.stream().map(|s| s.response_body.clone()),
                6 => Some(state.vm_config.clone()),
                7 => Some(state.plugin_config.clone()),
                _ => None,
            };
            let Some(data) = data else {
                return status(Status::BadArgument);
            };
            if data.is_empty() {
                return status(Status::NotFound);
            }
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            return_bytes(&mut caller, &data[start..end], ptr_out, size_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, VmState>,
         buffer: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> Result<i32> {
            let data = read(&mut caller, ptr, len)?;
            let Some(stream) = caller.data_mut().stream() else {
                return status(Status::BadArgument);
            };
            let body = match buffer {
                0 => &mut stream.request_body,
                1 => &mut stream.response_body,
                _ => return status(Status::BadArgument),
            };
            let start = (start as u32 as usize).min(body.len());
            let end = start.saturating_add(size as u32 as usize).min(body.len());
            body.splice(start..end, data);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, VmState>, map: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let Some(pairs) = header_map(caller.data_mut(), map).map(|m| serialize_map(m)) else {
                return status(Status::BadArgument);
            };
            return_bytes(&mut caller, &pairs, ptr_out, size_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, VmState>, map: i32, ptr: i32, len: i32| -> Result<i32> {
            let bytes = read(&mut caller, ptr, len)?;
            let Some(pairs) = deserialize_map(&bytes) else {
                return status(Status::SerializationFailure);
            };
            let Some(target) = header_map(caller.data_mut(), map) else {
                return status(Status::BadArgument);
            };
            *target = pairs
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, VmState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?.to_ascii_lowercase();
            let Some(target) = header_map(caller.data_mut(), map) else {
                return status(Status::BadArgument);
            };
            let Some(value) = target
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, v)| v.clone())
            else {
                return status(Status::NotFound);
            };
            return_bytes(&mut caller, value.as_bytes(), ptr_out, size_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, VmState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?.to_ascii_lowercase();
            let value = read_string(&mut caller, value_ptr, value_len)?;
            let Some(target) = header_map(caller.data_mut(), map) else {
                return status(Status::BadArgument);
            };
            match target.iter().position(|(n, _)| *n == key) {
                Some(first) => {
                    target[first].1 = value;
                    let mut index = 0;
                    target.retain(|(n, _)| {
                        index += 1;
                        index - 1 == first || *n != key
                    });
                }
                None => target.push((key, value)),
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, VmState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?.to_ascii_lowercase();
            let value = read_string(&mut caller, value_ptr, value_len)?;
            let Some(target) = header_map(caller.data_mut(), map) else {
                return status(Status::BadArgument);
            };
            target.push((key, value));
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, VmState>, map: i32, key_ptr: i32, key_len: i32| -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?.to_ascii_lowercase();
            let Some(target) = header_map(caller.data_mut(), map) else {
                return status(Status::BadArgument);
            };
            target.retain(|(n, _)| *n != key);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, VmState>,
         path_ptr: i32,
         path_len: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let path = read(&mut caller, path_ptr, path_len)?;
            let state = caller.data_mut();
            let value = state
                .stream()
                .and_then(|s| s.properties.get(&path).cloned())
                .or_else(|| state.root_properties.get(&path).cloned());
            let Some(value) = value else {
                return status(Status::NotFound);
            };
            return_bytes(&mut caller, &value, ptr_out, size_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, VmState>,
         path_ptr: i32,
         path_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            let path = read(&mut caller, path_ptr, path_len)?;
            let value = read(&mut caller, value_ptr, value_len)?;
            let state = caller.data_mut();
            match state.current.and_then(|id| state.streams.get_mut(&id)) {
                Some(stream) => {
                    stream.properties_set.push((path.clone(), value.clone()));
                    stream.properties.insert(path, value);
                }
                None => {
                    state.root_properties.insert(path, value);
                }
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, VmState>,
         key_ptr: i32,
         key_len: i32,
         ptr_out: i32,
         size_out: i32,
         cas_out: i32|
         -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?;
            let entry = lock(&caller.data().env.shared).get(&key);
            let Some((value, cas)) = entry else {
                return status(Status::NotFound);
            };
            return_bytes(&mut caller, &value, ptr_out, size_out)?;
            write_u32(&mut caller, cas_out, cas)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, VmState>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32,
         cas: i32|
         -> Result<i32> {
            let key = read_string(&mut caller, key_ptr, key_len)?;
            let value = read(&mut caller, value_ptr, value_len)?;
            let outcome = lock(&caller.data().env.shared).set(&key, value, cas as u32);
            match outcome {
                SetOutcome::Written => status(Status::Ok),
                SetOutcome::CasMismatch => status(Status::CasMismatch),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, VmState>, stream_type: i32| -> Result<i32> {
            let Some(stream) = caller.data_mut().stream() else {
                return status(Status::BadArgument);
            };
            stream.continued.push(stream_type);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, VmState>,
         status_code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> Result<i32> {
            let details = read_string(&mut caller, details_ptr, details_len)?;
            let body = read(&mut caller, body_ptr, body_len)?;
            let headers = read(&mut caller, headers_ptr, headers_len)?;
            let Some(headers) = deserialize_map(&headers) else {
                return status(Status::SerializationFailure);
            };
            let Some(stream) = caller.data_mut().stream() else {
                return status(Status::BadArgument);
            };
            stream.local_response = Some(LocalResponse {
                status: status_code as u32,
                details,
                body,
                headers,
                grpc_status,
            });
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, VmState>,
         kind: i32,
         name_ptr: i32,
         name_len: i32,
         id_out: i32|
         -> Result<i32> {
            let name = read_string(&mut caller, name_ptr, name_len)?;
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return status(Status::BadArgument),
            };
            let state = caller.data_mut();
            // Like Envoy: a new id for every definition, the same stat behind equal names.
            let id = u32::try_from(state.metric_ids.len())? * 4 + kind as u32 + 1;
            state.metric_ids.insert(id, (kind, name.clone()));
            lock(&state.env.metrics).entry(name).or_insert((kind, 0));
            write_u32(&mut caller, id_out, id)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, VmState>, id: i32, offset: i64| -> Result<i32> {
            update_metric(&caller, id, |kind, value| match kind {
                MetricKind::Counter if offset < 0 => None,
                MetricKind::Histogram => None,
                _ => Some(value.saturating_add(offset)),
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, VmState>, id: i32, value: i64| -> Result<i32> {
            update_metric(&caller, id, |kind, _| match kind {
                MetricKind::Counter => None,
                _ => Some(value),
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, VmState>, id: i32, out: i32| -> Result<i32> {
            let state = caller.data();
            let Some((_, name)) = state.metric_ids.get(&(id as u32)) else {
                return status(Status::NotFound);
            };
            let value = lock(&state.env.metrics).get(name).map_or(0, |(_, v)| *v);
            write(&mut caller, out, &value.to_le_bytes())?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_done",
        |_caller: Caller<'_, VmState>| -> Result<i32> { status(Status::Ok) },
    )?;
    Ok(())
}

fn update_metric(
    caller: &Caller<'_, VmState>,
    id: i32,
    update: impl FnOnce(MetricKind, i64) -> Option<i64>,
) -> Result<i32> {
    let state = caller.data();
    let Some((kind, name)) = state.metric_ids.get(&(id as u32)) else {
        return status(Status::NotFound);
    };
    let mut metrics = lock(&state.env.metrics);
    let entry = metrics.entry(name.clone()).or_insert((*kind, 0));
    match update(*kind, entry.1) {
        Some(value) => {
            entry.1 = value;
            status(Status::Ok)
        }
        None => status(Status::BadArgument),
    }
}

fn header_map(state: &mut VmState, map: i32) -> Option<&mut Vec<(String, String)>> {
    let index = usize::try_from(map).ok().filter(|m| *m < 4)?;
    state.stream().map(|stream| &mut stream.maps[index])
}

fn define_wasi(linker: &mut Linker<VmState>) -> Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, VmState>,
         fd: i32,
         iovs: i32,
         count: i32,
         written_out: i32|
         -> Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mut text = Vec::new();
            for index in 0..count {
                let iov = read(&mut caller, iovs + index * 8, 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                text.extend(read(&mut caller, ptr as i32, len as i32)?);
            }
            let (level, prefix) = if fd == 1 {
                (LogLevel::Info, "stdout: ")
            } else {
                (LogLevel::Error, "stderr: ")
            };
            let message = format!("{prefix}{}", String::from_utf8_lossy(&text).trim_end());
            let state = caller.data();
            state.env.log(state.index, level, message);
            write_u32(&mut caller, written_out, u32::try_from(text.len())?)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, VmState>, count_out: i32, size_out: i32| -> Result<i32> {
                write_u32(&mut caller, count_out, 0)?;
                write_u32(&mut caller, size_out, 0)?;
                Ok(ERRNO_SUCCESS)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(
            WASI,
            name,
            |_caller: Caller<'_, VmState>, _list: i32, _buf: i32| -> Result<i32> {
                Ok(ERRNO_SUCCESS)
            },
        )?;
    }
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, VmState>, _clock: i32, _precision: i64, out: i32| -> Result<i32> {
            let now = caller.data().env.now();
            write(&mut caller, out, &now.to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, VmState>, buf: i32, len: i32| -> Result<i32> {
            let mut bytes = vec![0u8; len as u32 as usize];
            let state = caller.data_mut();
            for byte in &mut bytes {
                // xorshift64: deterministic, which is what tests want.
                state.rng ^= state.rng << 13;
                state.rng ^= state.rng >> 7;
                state.rng ^= state.rng << 17;
                *byte = state.rng as u8;
            }
            write(&mut caller, buf, &bytes)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "sched_yield",
        |_caller: Caller<'_, VmState>| -> Result<i32> { Ok(ERRNO_SUCCESS) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_caller: Caller<'_, VmState>, _fd: i32, _out: i32| -> Result<i32> { Ok(ERRNO_BADF) },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_caller: Caller<'_, VmState>, code: i32| -> Result<()> {
            wasmtime::bail!("the module called proc_exit({code})")
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_in_the_abi_encoding() {
        let map = vec![
            (":path".to_string(), "/x".to_string()),
            ("x-empty".to_string(), String::new()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_map(&bytes), Some(map));
        assert_eq!(deserialize_map(&[]), Some(vec![]));
        assert_eq!(deserialize_map(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_map(&[9, 0, 0, 0]), None);
    }

    #[test]
    fn property_paths_are_nul_separated() {
        assert_eq!(property_key(&["source", "address"]), b"source\0address");
    }
}
